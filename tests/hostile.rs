//! The hostile job suite (issue 13): in the sysbox image's container, a job that is the runner
//! user, root through `sudo` and root through the inner docker (`--privileged --pid=host
//! --network host -v /:/host`) plants canaries everywhere it could outlive its life, and hunts for
//! the credentials everywhere it can look; the next life's job looks for every canary. With the
//! life sandbox on, in both restart modes (a Docker `restart: always` and a container restarted
//! inside a Kubernetes pod, whose network namespace outlives the start), nothing is found and
//! nothing is left; in the privileged image's container, the same through the container's paths.
//! Each check proves it can fail: the first life runs it right after planting
//! and must find every canary, and the hunt must find a decoy credential planted for it. With
//! `LIFE_SANDBOX=off` the next life finds exactly what a container's own writable layer keeps.
//! Needs root, the exported images and dockerd; skips (or fails in CI) through `testkit::require`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sysrunner_testkit::boxes::RestartMode;
use sysrunner_testkit::fake_github::{FakeConfig, JobResult};
use sysrunner_testkit::rig::{ImageRig, ImageRigSpec};
use sysrunner_testkit::{self as testkit, BoxKind, Need, image};

const LIFE: Duration = Duration::from_secs(240);
const NAME: &str = "sysrunner-hostile";

/// A busybox image for the inner docker, in every life (each starts with an empty data root).
const BASE: &str = r#"set -e
mkdir -p r/bin && cp /bin/busybox r/bin/
for a in $(r/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "r/bin/$a"; done
tar -C r -c . | docker import - job-base >/dev/null
echo base-built
"#;

/// Plants every canary. `c` is the canary's
/// name; the link is `hcanary0` (an interface name has at most 15 characters; the image has
/// busybox's `ip`, not iproute2's).
const PLANT: &str = r#"set -e
c=hostile-canary
for d in /usr/local/bin /etc /opt /var/tmp /var/lib /root /opt/actions-runner; do
  sudo -n sh -c "echo $c > $d/$c"
done
echo $c > /var/tmp/$c-user
sudo -n sh -c "cp /usr/local/bin/sysrunner /usr/local/bin/.s && echo $c >> /usr/local/bin/.s && mv -f /usr/local/bin/.s /usr/local/bin/sysrunner"
docker run --rm --privileged --pid=host --network host -v /:/host job-base sh -c "echo $c > /host/etc/$c-docker"
sudo -n unshare -m sh -c "umount -l /var/lib/docker && echo $c > /var/lib/docker/$c"
sudo -n sh -c "echo $c > /var/lib/docker/$c-data"
sudo -n setsid -f bash -c "exec -a $c-daemon sleep 100000" </dev/null >/dev/null 2>&1
sudo -n mount -t tmpfs $c /mnt
for d in /sys/fs/cgroup/pids /sys/fs/cgroup; do sudo -n mkdir "$d/$c" 2>/dev/null && break; done
sudo -n iptables -A INPUT -m comment --comment $c -j ACCEPT
sudo -n busybox ip link add hcanary0 type veth
sudo -n busybox ip link set hcanary0 up
sudo -n busybox ip route add 203.0.113.0/24 dev hcanary0
docker run -d --restart always --name $c job-base sleep 100000 >/dev/null
echo planted
"#;

/// One line per canary: `CANARY <name> FOUND` or `CANARY <name> absent`.
const CHECK: &str = r#"c=hostile-canary
say() { if sh -c "$2" >/dev/null 2>&1; then echo "CANARY $1 FOUND"; else echo "CANARY $1 absent"; fi; }
for d in usr-local-bin:/usr/local/bin etc:/etc opt:/opt var-tmp:/var/tmp var-lib:/var/lib root:/root release:/opt/actions-runner; do
  say "file-${d%%:*}" "sudo -n test -e ${d#*:}/$c"
done
say user-var-tmp "test -e /var/tmp/$c-user"
say binary "tail -c 64 /usr/local/bin/sysrunner | grep -q $c"
say docker-root "test -e /etc/$c-docker"
say beneath-volume "sudo -n unshare -m sh -c 'umount -l /var/lib/docker && test -e /var/lib/docker/$c'"
say data "sudo -n test -e /var/lib/docker/$c-data"
say daemon "ps -eo args= | grep -q '^$c-daemo[n]'"
say mount "grep -q ' $c ' /proc/self/mountinfo"
say cgroup "ls -d /sys/fs/cgroup/$c /sys/fs/cgroup/*/$c 2>/dev/null | grep -q ."
say iptables "sudo -n iptables-save | grep -q $c"
say link "busybox ip link show hcanary0"
say route "busybox ip route | grep -q 203.0.113"
say container "docker ps -aq --filter name=$c | grep -q ."
echo checked
"#;

/// The credential hunt, as root: every process's environment, command line and readable memory,
/// every file under the directories a job can write or read, then the same files again with
/// every mount of a private mount namespace taken off (what lies beneath), then every process
/// again as the inner docker's `--privileged --pid=host` container sees them (its files are the
/// life's root, already searched). One `SECRET <where>`
/// line per find. The pattern is put together at run time, so that the script's own text never
/// holds it; the hunter skips its own process.
const HUNT: &str = r#"cat > /tmp/hunt.pl <<'PERL'
use strict; use warnings; no warnings 'portable';
my $t = join("", "ghp_", "fakeAllGrants");
my $files_only = grep { $_ eq "--files" } @ARGV;
my $procs_only = grep { $_ eq "--procs" } @ARGV;
sub slurp { my ($p) = @_; open(my $h, "<:raw", $p) or return ""; local $/; my $s = <$h>; return defined $s ? $s : ""; }
unless ($files_only) {
  opendir(my $d, "/proc") or die;
  for my $pid (grep { /^\d+$/ } readdir($d)) {
    next if $pid == $$;
    for my $f ("environ", "cmdline") { print "SECRET /proc/$pid/$f\n" if index(slurp("/proc/$pid/$f"), $t) >= 0; }
    open(my $maps, "<", "/proc/$pid/maps") or next;
    open(my $mem, "<:raw", "/proc/$pid/mem") or next;
    while (my $l = <$maps>) {
      my ($a, $b, $perm) = $l =~ /^([0-9a-f]+)-([0-9a-f]+) (\S+)/ or next;
      next unless $perm =~ /^rw/;
      my ($s, $e) = (hex $a, hex $b);
      next if $e - $s > (512 << 20);
      for (my $o = $s; $o < $e; $o += (1 << 20)) {
        my $n = $e - $o < (1 << 20) ? $e - $o : (1 << 20);
        sysseek($mem, $o, 0) or last;
        my $buf = ""; my $r = sysread($mem, $buf, $n + 64);
        last unless defined $r && $r > 0;
        if (index($buf, $t) >= 0) { print "SECRET /proc/$pid/mem\n"; last; }
      }
    }
  }
}
exit 0 if $procs_only;
my @todo = grep { -d } qw(/etc /opt /var /root /home /tmp /run /usr/local /srv /mnt /media);
my %seen;
while (my $p = shift @todo) {
  my @st = lstat($p) or next;
  next if $seen{"$st[0]:$st[1]"}++;
  if (-d _) { opendir(my $d, $p) or next; push @todo, map { "$p/$_" } grep { $_ ne "." && $_ ne ".." } readdir($d); next; }
  next unless -f _ && $st[7] < (64 << 20);
  print "SECRET file $p\n" if index(slurp($p), $t) >= 0;
}
PERL
echo "hunt-clock $(date +%s.%N)"
sudo -n perl /tmp/hunt.pl
echo "hunt-clock $(date +%s.%N)"
sudo -n unshare -m sh -c 'awk "{print \$5}" /proc/self/mountinfo | sort -r | while read -r m; do [ "$m" = / ] || umount -l "$m" 2>/dev/null; done; perl /tmp/hunt.pl --files' | sed 's/^SECRET /SECRET beneath /'
echo "hunt-clock $(date +%s.%N)"
docker run --rm --privileged --pid=host --network host -v /:/host job-base chroot /host perl /tmp/hunt.pl --procs | sed 's/^SECRET /SECRET docker /'
echo "hunt-clock $(date +%s.%N)"
# Only a count leaves the container: what ps prints would pass through dockerd's memory.
test "$(docker run --rm --privileged --pid=host job-base sh -c "ps -o args | grep -c '^sysrunner run'")" = 0 || echo "SECRET docker sees sysrunner run"
ps -eo args= | grep -q '^sysrunner ru[n]' && echo "SECRET sees sysrunner run"
sudo -n test -e /var/lib/sysrunner/registration.json && echo "SECRET sees the registration record"
echo hunted
"#;

/// A decoy credential where the hunt must find it (a process's environment, command line and
/// memory; a file), proving it can.
const DECOY: &str = r#"t=$(printf 'ghp_%s' fakeAllGrants)
printf '%s\n' "$t" > /tmp/decoy-file
env DECOY="$t" setsid -f bash -c "exec -a decoy-$t sleep 100000" </dev/null >/dev/null 2>&1
sleep 0.2
echo decoy-planted
"#;

const UNDECOY: &str =
    r#"pkill -f '^decoy-ghp_' ; rm -f /tmp/decoy-file; sleep 0.2; echo decoy-gone"#;

fn ready(test: &str) -> Option<testkit::lock::Lock> {
    let mut needs = testkit::gate::BOX_WITH_DOCKERD.to_vec();
    needs.extend([Need::Images, Need::Compose]);
    testkit::require(test, &needs).then(testkit::serial)
}

/// The canaries a check's output says it found, and whether it ran to the end.
fn found(output: &str) -> (Vec<String>, Vec<String>) {
    let mut found = Vec::new();
    let mut absent = Vec::new();
    for l in output.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("CANARY") {
            continue;
        }
        let (Some(name), Some(state)) = (w.next(), w.next()) else {
            continue;
        };
        match state {
            "FOUND" => found.push(name.to_string()),
            _ => absent.push(name.to_string()),
        }
    }
    (found, absent)
}

fn secrets(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.starts_with("SECRET "))
        .collect()
}

struct Suite {
    _dir: tempfile::TempDir,
    r: ImageRig,
    logs: PathBuf,
}

fn start(kind: BoxKind, mode: RestartMode, sandbox: &str) -> Suite {
    let (image_name, compose) = match kind {
        BoxKind::SysboxLike => ("sysbox", "compose.sysbox.yml"),
        BoxKind::PrivilegedLike => ("privileged", "compose.privileged.yml"),
    };
    let dir = tempfile::Builder::new()
        .prefix("sysrunner-hostile-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tree = dir.path().join("rootfs");
    image::unpack(
        &image::exported_dir().join(format!("{image_name}.tar")),
        &tree,
    )
    .unwrap();
    let mut env: BTreeMap<String, String> = ImageRig::settings(NAME);
    env.insert("RUNNER_SUDO".into(), "true".into());
    env.insert("LIFE_SANDBOX".into(), sandbox.into());
    let tmpfs = testkit::compose::tmpfs_entries(
        &testkit::compose::runner_service(Path::new(env!("CARGO_MANIFEST_DIR")), compose).unwrap(),
    );
    let image = image::exported_config(image_name).unwrap();
    let r = ImageRig::start(ImageRigSpec {
        kind,
        fake: FakeConfig::default(),
        tree: &tree,
        image: &image,
        tmpfs: &tmpfs,
        mode,
        env: &env,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let logs = dir.path().to_path_buf();
    Suite { _dir: dir, r, logs }
}

impl Suite {
    /// One life running one job of `steps`: the job's output and the life's log.
    fn life(&mut self, n: u32, steps: &[&str]) -> (String, String) {
        let job = self.r.queue(NAME, &format!("life-{n}"), steps);
        let t = Instant::now();
        let (code, log) = self.r.life(&self.logs.join(format!("life-{n}.log")), LIFE);
        eprintln!("life {n}: {:.1?}", t.elapsed());
        let job = self.r.job(job.id);
        for l in job.output.lines().filter(|l| l.starts_with("hunt-clock")) {
            eprintln!("  {l}");
        }
        assert_eq!(code, Some(0), "life {n}:\n{log}\njob:\n{}", job.output);
        assert_eq!(
            job.result,
            Some(JobResult::Succeeded),
            "life {n}'s job:\n{}\nlog:\n{log}",
            job.output
        );
        assert!(!log.contains("ghp_fake"), "the token reached the log");
        (job.output, log)
    }
}

fn sandboxed_suite(kind: BoxKind, mode: RestartMode) {
    let mut s = start(kind, mode, "required");
    let (first, log) = s.life(1, &[BASE, PLANT, CHECK, DECOY, HUNT, UNDECOY, HUNT]);
    assert!(log.contains("phase=\"sandbox\""), "{log}");
    assert!(first.contains("planted"), "{first}");
    // Proof that every check can fail: right after planting, each finds its canary.
    let (found_now, absent_now) = found(&first);
    assert!(
        absent_now.is_empty() && found_now.len() == 19,
        "a check missed the canary planted for it: {absent_now:?}\n{first}"
    );
    // The hunt finds the decoy everywhere it was put, and then nothing at all.
    let hunts: Vec<&str> = first.split("hunted").collect();
    assert!(hunts.len() >= 3, "{first}");
    let with_decoy = secrets(hunts[0]);
    for place in ["/environ", "/cmdline", "/mem", "file /tmp/decoy-file"] {
        assert!(
            with_decoy.iter().any(|l| l.contains(place)),
            "the hunt missed the decoy in {place}: {with_decoy:?}"
        );
    }
    let after = secrets(hunts[1]);
    assert!(
        after.is_empty(),
        "the job found the credentials or sysrunner: {after:?}"
    );
    // Nothing of the life in the container's own layer.
    let upper = s.r.c.upper().to_path_buf();
    let leaked: Vec<_> = walk(&upper)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("canary"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the life wrote into the container's layer: {leaked:?}"
    );

    let (second, _) = s.life(2, &[BASE, CHECK, HUNT]);
    let (found_next, _) = found(&second);
    assert!(second.contains("checked"), "{second}");
    assert!(
        found_next.is_empty(),
        "the next life found what the first left: {found_next:?}\n{second}"
    );
    let next = secrets(&second);
    assert!(next.is_empty(), "{next:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn a_hostile_root_job_leaves_nothing_and_finds_no_credential_docker_restart() {
    let Some(_serial) = ready("hostile suite (docker restart)") else {
        return;
    };
    sandboxed_suite(BoxKind::SysboxLike, RestartMode::Docker);
}

#[test]
fn a_hostile_root_job_leaves_nothing_and_finds_no_credential_pod_restart() {
    let Some(_serial) = ready("hostile suite (pod restart)") else {
        return;
    };
    sandboxed_suite(BoxKind::SysboxLike, RestartMode::Pod);
}

/// Under `privileged: true` the sandbox gives the same through the container's paths (README's
/// Security table); what a job can do as root on the host is outside any container's reach, and
/// the suite does not try it on this machine.
#[test]
fn a_hostile_root_job_in_a_privileged_container_leaves_nothing_through_its_paths() {
    let Some(_serial) = ready("hostile suite (privileged)") else {
        return;
    };
    sandboxed_suite(BoxKind::PrivilegedLike, RestartMode::Docker);
}

/// Without the sandbox, what a container start resets by itself (its namespaces: processes,
/// mounts, the network's rules and links, tmpfs), a new cgroup and dockerd's emptied data root
/// are gone, and what its writable layer keeps is found by the next life: the checks fail where
/// they should. (In a pod, whose network namespace outlives a start, the rule, link and route
/// would stay too.)
#[test]
fn without_the_sandbox_the_next_life_finds_what_the_containers_layer_keeps() {
    let Some(_serial) = ready("hostile suite (LIFE_SANDBOX=off)") else {
        return;
    };
    let mut s = start(BoxKind::SysboxLike, RestartMode::Docker, "off");
    let (first, _) = s.life(1, &[BASE, PLANT, CHECK]);
    assert!(first.contains("planted"), "{first}");
    let (second, _) = s.life(2, &[BASE, CHECK]);
    let (mut found_next, _) = found(&second);
    found_next.sort();
    let mut want: Vec<String> = [
        "beneath-volume",
        "binary",
        "docker-root",
        "file-etc",
        "file-opt",
        // pristine's runner directory is an overlay of the release, which root changed.
        "file-release",
        "file-root",
        "file-usr-local-bin",
        "file-var-lib",
        "file-var-tmp",
        "user-var-tmp",
    ]
    .map(String::from)
    .to_vec();
    want.sort();
    assert_eq!(found_next, want, "{second}");
}
