use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn the_first_life_gets_the_first_slash_30_of_the_range() {
    let p = plan(0, 1500, &[]).unwrap();
    assert_eq!(p.net, net("198.19.0.0/30"));
    assert_eq!(p.host_addr, Ipv4Addr::new(198, 19, 0, 1));
    assert_eq!(p.life_addr, Ipv4Addr::new(198, 19, 0, 2));
    assert_eq!(p.prefix, 30);
    assert_eq!(p.dns, "198.19.0.1:53".parse::<SocketAddr>().unwrap());
    assert_eq!((p.host_if.as_str(), p.life_if.as_str()), ("vlife0", "eth0"));
    assert_eq!(p.tag, "sysrunner-life-0");
    assert!(p.extra_routes.is_empty());
}

#[test]
fn the_mtu_is_carried_and_one_no_veth_takes_is_refused() {
    for mtu in [68, 1280, 1400, 1450, 1500, 9000, 65535] {
        assert_eq!(plan(3, mtu, &[]).unwrap().mtu, mtu);
    }
    for mtu in [0, 67, 65536, u32::MAX] {
        assert!(
            matches!(plan(3, mtu, &[]), Err(NetError::Mtu { mtu: m }) if m == mtu),
            "{mtu}"
        );
    }
}

#[test]
fn interface_names_fit_ifnamsiz_for_every_life_number() {
    for life in [0, 9, 10, 16383, 16384, 999_999_999, u32::MAX] {
        let p = plan(life, 1500, &[]).unwrap();
        assert!(p.host_if.len() <= 15, "{}", p.host_if);
        assert!(p.life_if.len() <= 15, "{}", p.life_if);
        assert!(any_life_link(&p.host_if), "{}", p.host_if);
        assert!(any_life(&p.tag), "{}", p.tag);
    }
}

#[test]
fn each_life_gets_its_own_addresses_names_and_tag() {
    let slots = 1 << (PREFIX - RANGE.prefix_len());
    let plans: Vec<Plan> = (0..slots).map(|l| plan(l, 1500, &[]).unwrap()).collect();
    let mut nets: Vec<_> = plans.iter().map(|p| p.net).collect();
    nets.sort();
    nets.dedup();
    assert_eq!(nets.len(), plans.len(), "two lives share a /30");
    for p in &plans {
        assert!(RANGE.contains(&p.net));
        assert!(p.net.contains(&p.host_addr) && p.net.contains(&p.life_addr));
        assert_ne!(p.host_addr, p.life_addr);
        assert!(![p.net.network(), p.net.broadcast()].contains(&p.host_addr));
        assert!(![p.net.network(), p.net.broadcast()].contains(&p.life_addr));
    }
    let names: std::collections::BTreeSet<_> = plans.iter().map(|p| &p.host_if).collect();
    assert_eq!(names.len(), plans.len());
    // Far apart, the slots repeat but the names and tags never do.
    let a = plan(1, 1500, &[]).unwrap();
    let b = plan(1 + slots, 1500, &[]).unwrap();
    assert_eq!(a.net, b.net);
    assert_ne!(a.host_if, b.host_if);
    assert_ne!(a.tag, b.tag);
}

#[test]
fn the_range_stays_out_of_dockers_default_pools() {
    // moby libnetwork/ipamutils: 172.17.0.0/16 … 172.31.0.0/16, and 192.168.0.0/16 in /20s.
    for pool in ["172.16.0.0/12", "192.168.0.0/16"] {
        assert!(!overlap(&RANGE, &net(pool)), "{pool}");
    }
    for n in NEVER_ROUTED {
        assert!(!overlap(&RANGE, &n), "{n}");
    }
}

#[test]
fn a_slash_30_the_container_uses_is_skipped() {
    // The container sits in life 5's slot, and a /28 covers the slots of lives 8 to 11.
    let taken = [net("198.19.0.20/30"), net("198.19.0.32/28")];
    assert_eq!(plan(5, 1500, &taken).unwrap().net, net("198.19.0.24/30"));
    for life in 8..=11 {
        assert_eq!(
            plan(life, 1500, &taken).unwrap().net,
            net("198.19.0.48/30"),
            "life {life}"
        );
    }
    // A single address of the container inside a slot is enough to skip it.
    let host = [net("198.19.0.6/32")];
    assert_eq!(plan(1, 1500, &host).unwrap().net, net("198.19.0.8/30"));
    // Networks outside the range change nothing.
    let outside = [net("172.18.0.0/16"), net("10.0.0.0/8")];
    assert_eq!(plan(5, 1500, &outside).unwrap().net, net("198.19.0.20/30"));
}

#[test]
fn a_life_still_tearing_down_pushes_the_next_one_aside() {
    let slots = 1 << (PREFIX - RANGE.prefix_len());
    let first = plan(1, 1500, &[]).unwrap();
    // What container_networks reads while the first life's link still exists.
    let taken = [first.net];
    let second = plan(1 + slots, 1500, &taken).unwrap();
    assert!(!overlap(&first.net, &second.net));
    assert_eq!(second.net, net("198.19.0.8/30"));
}

#[test]
fn the_search_wraps_around_the_end_of_the_range() {
    let last = plan(16383, 1500, &[]).unwrap();
    assert_eq!(last.net, net("198.19.255.252/30"));
    let wrapped = plan(16383, 1500, &[last.net]).unwrap();
    assert_eq!(wrapped.net, net("198.19.0.0/30"));
}

#[test]
fn no_free_slash_30_is_an_error_that_a_restart_does_not_fix() {
    for taken in [
        vec![net("198.19.0.0/16")],
        vec![net("198.16.0.0/12")],
        vec![net("198.19.0.0/17"), net("198.19.128.0/17")],
    ] {
        let e = plan(42, 1500, &taken).unwrap_err();
        assert!(
            matches!(e, NetError::Exhausted { life: 42, .. }),
            "{taken:?}: {e}"
        );
        assert!(e.permanent());
        assert!(e.to_string().contains("198.19.0.0/16"), "{e}");
    }
    // A default route takes nothing.
    assert_eq!(
        plan(42, 1500, &[net("0.0.0.0/0")]).unwrap().net,
        net("198.19.0.168/30")
    );
    // One slot left: every life gets it.
    // The range but one /30: at each prefix length, the sibling of the half that holds it.
    let keep = u32::from(Ipv4Addr::new(198, 19, 77, 4));
    let all_but_one: Vec<Ipv4Net> = (RANGE.prefix_len() + 1..=PREFIX)
        .map(|len| {
            let sibling = (keep ^ (1 << (32 - len))) & (u32::MAX << (32 - len));
            Ipv4Net::new(Ipv4Addr::from(sibling), len).unwrap()
        })
        .collect();
    assert_eq!(
        Ipv4Net::aggregate(&[all_but_one.clone(), vec![net("198.19.77.4/30")]].concat()),
        [RANGE]
    );
    for life in [0, 7, 5_000, u32::MAX] {
        assert_eq!(
            plan(life, 1500, &all_but_one).unwrap().net,
            net("198.19.77.4/30")
        );
    }
}

#[test]
fn the_containers_networks_become_on_link_routes_in_the_life() {
    let taken = [
        net("0.0.0.0/0"),
        // An address with its host bits, as an address dump gives it.
        net("172.18.0.3/16"),
        net("172.18.0.0/16"),
        net("10.231.1.0/30"),
        net("10.231.1.2/30"),
        // Loopback, link-local (Calico's gateway), multicast, broadcast: never through NAT.
        net("127.0.0.0/8"),
        net("169.254.1.1/32"),
        net("224.0.0.0/4"),
        net("255.255.255.255/32"),
        // Another life's link.
        net("198.19.0.4/30"),
        // A nameserver as a /32, and two halves that merge.
        net("192.168.1.1/32"),
        net("10.50.0.0/17"),
        net("10.50.128.0/17"),
    ];
    let p = plan(0, 1500, &taken).unwrap();
    assert_eq!(
        p.extra_routes,
        [
            net("10.50.0.0/16"),
            net("10.231.1.0/30"),
            net("172.18.0.0/16"),
            net("192.168.1.1/32"),
        ]
    );
    assert_eq!(p.net, net("198.19.0.0/30"));
}

#[test]
fn every_rule_carries_the_lives_tag_and_names_its_link() {
    let p = plan(7, 1500, &[]).unwrap();
    let rules = p.rules();
    assert!(!rules.is_empty());
    for r in &rules {
        let comment = r.spec.windows(2).find(|w| w[0] == "--comment");
        assert_eq!(
            comment.map(|w| w[1].as_str()),
            Some("sysrunner-life-7"),
            "{r:?}"
        );
        assert!(
            r.spec.contains(&p.host_if) || r.spec.contains(&p.net.to_string()),
            "{r:?}"
        );
        assert_eq!(r.spec[r.spec.len() - 2], "-j", "{r:?}");
    }
}

#[test]
fn the_life_is_masqueraded_and_forwarded_but_not_into_another_life() {
    let p = plan(7, 1500, &[]).unwrap();
    let rules = p.rules();
    let of = |chain: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.chain == chain)
            .map(|r| r.spec.join(" "))
            .collect()
    };
    assert_eq!(
        of("POSTROUTING"),
        ["-s 198.19.0.28/30 -m comment --comment sysrunner-life-7 -j MASQUERADE"]
    );
    assert!(
        rules
            .iter()
            .all(|r| (r.chain == "POSTROUTING") == (r.table == "nat"))
    );
    assert_eq!(
        of("FORWARD"),
        [
            "-i vlife7 -o vlife+ -m comment --comment sysrunner-life-7 -j DROP",
            "-i vlife7 -m comment --comment sysrunner-life-7 -j ACCEPT",
            "-o vlife7 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment sysrunner-life-7 -j ACCEPT",
        ]
    );
}

#[test]
fn the_life_reaches_only_the_relay_in_the_containers_namespace() {
    let p = plan(7, 1500, &[]).unwrap();
    let input: Vec<String> = p
        .rules()
        .iter()
        .filter(|r| r.chain == "INPUT")
        .map(|r| {
            assert_eq!(r.table, "filter");
            r.spec.join(" ")
        })
        .collect();
    assert_eq!(
        input,
        [
            "-i vlife7 -d 198.19.0.29/32 -p udp --dport 53 -m comment --comment sysrunner-life-7 -j ACCEPT",
            "-i vlife7 -d 198.19.0.29/32 -p tcp --dport 53 -m comment --comment sysrunner-life-7 -j ACCEPT",
            "-i vlife7 -m comment --comment sysrunner-life-7 -j DROP",
        ]
    );
    assert_eq!(p.dns.ip(), IpAddr::V4(p.host_addr));
}

/// What `iptables-save` printed for three lives and rules of someone else's (iptables-nft 1.8.9,
/// with the warning it prints when legacy tables exist too).
const DUMP: &str = "\
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Dec  2 08:00:00 2025
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 198.19.0.4/30 -m comment --comment sysrunner-life-1 -j MASQUERADE
-A POSTROUTING -s 198.19.0.40/30 -m comment --comment sysrunner-life-10 -j MASQUERADE
COMMIT
# Completed on Tue Dec  2 08:00:00 2025
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:DOCKER-USER - [0:0]
-A INPUT -d 198.19.0.5/32 -i vlife1 -p udp -m udp --dport 53 -m comment --comment sysrunner-life-1 -j ACCEPT
-A INPUT -i vlife10 -m comment --comment sysrunner-life-10 -j DROP
-A INPUT -i vlife1 -m comment --comment sysrunner-life-1 -j DROP
-A INPUT -i vlife16385 -m comment --comment sysrunner-life-16385 -j DROP
-A FORWARD -o vlife1 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment sysrunner-life-1 -j ACCEPT
-A FORWARD -i eth0 -m comment --comment \"sysrunner-life-1 but quoted\" -j ACCEPT
-A FORWARD -i eth1 -m comment --comment sysrunner-lifeboat -j ACCEPT
-A FORWARD -i eth2 -m comment --comment sysrunner-life- -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
# Warning: iptables-legacy tables present, use iptables-legacy-save to see them
";

#[test]
fn teardown_deletes_exactly_its_own_rules_table_by_table() {
    let own = tag(1);
    assert_eq!(
        restore_script(deletions(DUMP, |c| c == own)),
        "\
*filter
-D INPUT -d 198.19.0.5/32 -i vlife1 -p udp -m udp --dport 53 -m comment --comment sysrunner-life-1 -j ACCEPT
-D INPUT -i vlife1 -m comment --comment sysrunner-life-1 -j DROP
-D FORWARD -o vlife1 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment sysrunner-life-1 -j ACCEPT
COMMIT
*nat
-D POSTROUTING -s 198.19.0.4/30 -m comment --comment sysrunner-life-1 -j MASQUERADE
COMMIT
"
    );
}

#[test]
fn the_sweep_deletes_every_lives_rules_and_nobody_elses() {
    let d = deletions(DUMP, any_life);
    let lives: Vec<(&str, &str)> = d
        .iter()
        .flat_map(|(table, lines)| {
            lines.iter().map(move |l| {
                let tag = l.split_whitespace().find(|w| w.starts_with(TAG_PREFIX));
                (table.as_str(), tag.unwrap())
            })
        })
        .collect();
    assert_eq!(
        lives,
        [
            ("filter", "sysrunner-life-1"),
            ("filter", "sysrunner-life-10"),
            ("filter", "sysrunner-life-1"),
            ("filter", "sysrunner-life-16385"),
            ("filter", "sysrunner-life-1"),
            ("nat", "sysrunner-life-1"),
            ("nat", "sysrunner-life-10"),
        ]
    );
    for name in ["vlife0", "vlife16385", "vlife4294967295"] {
        assert!(any_life_link(name), "{name}");
    }
    for name in ["vlife", "vlife+", "vlife1a", "eth0", "xvlife1", "vlife-1"] {
        assert!(!any_life_link(name), "{name}");
    }
}

#[test]
fn a_dump_without_our_rules_deletes_nothing() {
    let own = tag(2);
    assert!(deletions(DUMP, |c| c == own).is_empty());
    assert!(deletions("", any_life).is_empty());
    assert!(deletions("*filter\n-A INPUT -m comment --comment\nCOMMIT\n", any_life).is_empty());
    // A rule outside any table section is not trusted.
    assert!(
        deletions(
            "-A INPUT -m comment --comment sysrunner-life-2 -j DROP",
            any_life
        )
        .is_empty()
    );
    assert_eq!(restore_script(BTreeMap::<String, Vec<String>>::new()), "");
}

#[test]
fn setup_inserts_each_chains_rules_in_order_at_its_head() {
    let p = plan(7, 1500, &[]).unwrap();
    let script = insert_script(&p.rules());
    let lines: Vec<&str> = script.lines().collect();
    let heads: Vec<String> = lines
        .iter()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        heads,
        [
            "*filter",
            "-I FORWARD 1",
            "-I FORWARD 2",
            "-I FORWARD 3",
            "-I INPUT 1",
            "-I INPUT 2",
            "-I INPUT 3",
            "COMMIT",
            "*nat",
            "-I POSTROUTING 1",
            "COMMIT",
        ]
    );
    assert_eq!(
        lines[6],
        "-I INPUT 3 -i vlife7 -m comment --comment sysrunner-life-7 -j DROP"
    );
    // What setup inserts, teardown finds again in the dump of the same rules.
    let dump = script.replace("-I ", "-A ");
    let dump: String = dump
        .lines()
        .map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            if w.first() == Some(&"-A") {
                w.remove(2);
            }
            w.join(" ") + "\n"
        })
        .collect();
    let own = tag(7);
    assert_eq!(
        deletions(&dump, |c| c == own)
            .values()
            .map(Vec::len)
            .sum::<usize>(),
        p.rules().len()
    );
}

#[test]
fn only_what_the_container_lacks_or_bad_numbers_are_permanent() {
    let passing = NetError::Iptables {
        command: "iptables-nft-restore -w 10 --noflush".into(),
        input: "*nat\nCOMMIT\n".into(),
        status: ExitStatus::Code(4),
        stderr: "Another app is currently holding the xtables lock".into(),
    };
    assert!(!passing.permanent());
    assert!(
        NetError::IptablesMissing {
            binary: "iptables-nft".into()
        }
        .permanent()
    );
    assert!(NetError::SharedNamespace { pid: 7 }.permanent());
    assert!(
        !NetError::Io {
            what: "open a netlink socket".into(),
            source: io::Error::other("x"),
        }
        .permanent()
    );
}

#[test]
fn teardown_deletes_exactly_what_setup_inserted() {
    let p = plan(7, 1500, &[]).unwrap();
    let inserted = insert_script(&p.rules());
    let deleted = delete_script(&p.rules());
    // Line for line the same rules, `-I CHAIN n` become `-D CHAIN`, tables and COMMITs kept.
    let as_deleted: Vec<String> = inserted
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() == Some(&"-I") {
                let mut w = w.clone();
                w[0] = "-D";
                w.remove(2);
                w.join(" ")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(deleted.lines().collect::<Vec<_>>(), as_deleted);
    assert!(deleted.contains("-D INPUT -i vlife7 -m comment --comment sysrunner-life-7 -j DROP"));
}
