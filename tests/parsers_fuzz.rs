//! Property tests of every parser of input from outside sysrunner: settings values and the
//! `*_FILE` contents, the probe's files (`probe --root`: mountinfo, cgroup, `/proc/self/status`,
//! id maps, namespace links), the runner's output markers, GitHub's JSON answers and the JIT
//! configs inside them, and the `daemon.json` sysrunner writes for dockerd. Each property feeds a
//! parser arbitrary text and text near valid input (seeds from the tests and fixtures, mutated), and
//! checks that it never panics and, where there is one, the property its contract states.
//!
//! The default case count is the short run `cargo test` makes; FUZZ.md has the long run's numbers
//! and the command to repeat it (`PROPTEST_CASES=…`). Failures found are fixed in the parser, each
//! with a regression test named for it beside the parser's other unit tests.

use base64::Engine;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use sysrunner::config::{
    self, DataPolicy, DockerSettings, DockerdMode, FOREIGN, ImageStore, Inputs, Kind, Problems,
    SETTINGS,
};
use sysrunner::dockerd::plan::{self as dplan, PlanInput, Version};
use sysrunner::probe::{self, Facts, Runtime, mountinfo};
use sysrunner::runner::markers::{self, Marker, State};
use sysrunner::scaleset;

// ---------------------------------------------------------------------------------------------
// Generators shared by every group.

/// Characters that break parsers more often than a random one does.
const ODD: &[char] = &[
    ' ', '\t', '\n', '\r', '\0', '/', ':', ',', '.', '-', '+', '_', '@', '\\', '[', ']', '=', '%',
    '#', '?', '\'', '"', '0', '7', '9', 'k', 'm', 'g', 's', 'h', 'b', 'K', 'M', 'G', 'é', 'ß', 'İ',
    '\u{feff}', '\u{202e}', '\u{7f}', '\u{85}', '\u{a0}', '\u{212a}', '٣', '∞',
];

fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![3 => select(ODD), 1 => any::<char>()]
}

/// `seed` changed by a few edits: insert, delete, replace, truncate, repeat, change case.
fn mutate(seed: &str, ops: &[(u8, usize, char)]) -> String {
    let mut c: Vec<char> = seed.chars().collect();
    for &(op, pos, ch) in ops {
        let at = |len: usize| if len == 0 { 0 } else { pos % len };
        match op % 7 {
            0 | 1 => {
                let i = pos % (c.len() + 1);
                c.insert(i, ch);
            }
            2 if !c.is_empty() => {
                let i = at(c.len());
                c.remove(i);
            }
            3 if !c.is_empty() => {
                let i = at(c.len());
                c[i] = ch;
            }
            4 => c.truncate(pos % (c.len() + 1)),
            5 if !c.is_empty() => {
                let i = at(c.len());
                let tail: Vec<char> = c[i..].to_vec();
                c.extend(tail);
            }
            _ => {
                c = c
                    .iter()
                    .map(|x| {
                        if x.is_ascii_lowercase() {
                            x.to_ascii_uppercase()
                        } else {
                            x.to_ascii_lowercase()
                        }
                    })
                    .collect();
            }
        }
    }
    c.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, char)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), odd_char()), 0..4)
}

/// Arbitrary text, or one of `seeds` with a few edits.
fn text_near(seeds: Vec<String>) -> BoxedStrategy<String> {
    let near = (select(seeds), edits()).prop_map(|(s, ops)| mutate(&s, &ops));
    prop_oneof![
        1 => any::<String>(),
        1 => prop::collection::vec(odd_char(), 0..24).prop_map(|v| v.into_iter().collect()),
        4 => near,
    ]
    .boxed()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with the given fields, each either its well-typed value or any JSON value, some left
/// out; plus a few unknown fields.
fn object_near(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let per_field: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(name, good)| {
            prop_oneof![
                4 => good.prop_map(move |v| Some((name.to_string(), v))),
                2 => json_value().prop_map(move |v| Some((name.to_string(), v))),
                1 => Just(None),
            ]
            .boxed()
        })
        .collect();
    (
        per_field,
        prop::collection::btree_map("[a-zA-Z]{1,8}", json_value(), 0..2),
    )
        .prop_map(|(known, extra)| {
            let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
            for (k, v) in known.into_iter().flatten() {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

fn s(v: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Value> {
    v.prop_map(Value::from).boxed()
}
fn u(v: impl Strategy<Value = u64> + 'static) -> BoxedStrategy<Value> {
    v.prop_map(Value::from).boxed()
}
fn i(v: impl Strategy<Value = i64> + 'static) -> BoxedStrategy<Value> {
    v.prop_map(Value::from).boxed()
}

// ---------------------------------------------------------------------------------------------
// Settings: every setting's parser, through the one path the text takes (flag or environment,
// `*_FILE`, step one's parser of its kind, step two's rules).

const HOST: &str = "3f2a9c1d7e0b";
static KEY: &str = include_str!("keys/app.pem");

/// A valid JIT config naming runner `name`.
fn jit_for(name: &str) -> String {
    let runner = b64(json!({"agentId": 7, "agentName": name, "poolId": 1}).to_string());
    b64(
        json!({".runner": runner, ".credentials": "e30=", ".credentials_rsaparams": "e30="})
            .to_string(),
    )
}

/// Values near valid ones for each kind: the forms the unit tests accept and refuse.
fn seeds(kind: Kind) -> Vec<String> {
    let v: Vec<String> = match kind {
        Kind::Repo => vec![
            "octo-org/octo-repo",
            "a/b",
            "O/.github",
            "https://github.com/a/b",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        Kind::Slug => vec!["octo-org".into(), "octo/repo".into()],
        Kind::Secret => vec![
            "ghp_abc".into(),
            "ghp_abc\n".into(),
            "github_pat_11AA_bb".into(),
        ],
        Kind::RsaKey => vec![KEY.into(), KEY.replace('\n', "\\n")],
        Kind::JitConfig => vec![jit_for("ci-host1-0000002a"), b64(r#"{".runner":"e30="}"#)],
        Kind::SecretFile => vec!["/run/secrets/token".into(), "relative".into()],
        Kind::AppId => vec!["123456".into(), "Iv1.0123456789abcdef".into()],
        Kind::Id => vec!["42".into(), "18446744073709551615".into()],
        Kind::Url => vec![
            "https://github.com".into(),
            "https://ghes.example.com/".into(),
            "http://127.0.0.1:8080".into(),
            "https://x?y=1".into(),
        ],
        Kind::UrlList => vec!["https://m1.example, http://m2.example:5000".into()],
        Kind::RunnerName => vec!["sysrunner-3f2a9c1d7e0b".into(), "a.b_c".into()],
        Kind::Labels => vec![" gpu , linux-big,x".into(), "a,,b".into()],
        Kind::RunnerGroup => vec!["Default".into()],
        Kind::Bool => vec!["true".into(), "no".into(), "1".into()],
        Kind::Choice(words) => words.iter().map(|w| w.to_string()).collect(),
        Kind::AbsPath => vec!["/opt/actions-runner".into(), "/opt/../etc".into()],
        Kind::AbsPathList => vec!["/cache,/var/cache/x".into()],
        Kind::WorkPath => vec!["_work".into(), "/work".into()],
        Kind::UserName => vec!["runner".into(), "root".into()],
        Kind::Mtu => vec!["detect".into(), "1400".into(), "68".into(), "65535".into()],
        Kind::Duration => vec!["90".into(), "5m".into(), "1h".into(), "168h".into()],
        Kind::LogLevel => vec![
            "debug".into(),
            "sysrunner=debug, dockerd=warn".into(),
            "[span{field=value}]=trace".into(),
        ],
        Kind::Count => vec!["0".into(), "4194304".into()],
        Kind::Bytes => vec!["512m".into(), "6291456".into(), "2gb".into()],
        Kind::Cpus => vec!["1.5".into(), ".25".into(), "0.000000001".into()],
        Kind::Listen => vec!["9090".into(), "127.0.0.1:9102".into(), "[::]:9090".into()],
        Kind::Image => vec![
            "ghcr.io/sysrunner/sysrunner:0.1.0".into(),
            "localhost:5000/a/b:tag".into(),
            format!("sysrunner@sha256:{}", "0123456789abcdef".repeat(4)),
        ],
    };
    v
}

/// What settings are read from, as maps.
#[derive(Debug, Clone, Default)]
struct Given {
    env: HashMap<String, OsString>,
    flags: BTreeMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl Given {
    /// The smallest valid configuration for `run`, `prune` and `scale`.
    fn valid() -> Given {
        let mut g = Given::default();
        g.env.insert("REPO".into(), "octo-org/octo-repo".into());
        g.env.insert("ACCESS_TOKEN".into(), "ghp_x".into());
        g
    }
    fn with<T>(&self, f: impl FnOnce(&Inputs) -> T) -> T {
        let env = |k: &str| self.env.get(k).cloned();
        let read = |p: &Path| {
            self.files
                .get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        f(&Inputs {
            flags: &self.flags,
            env: &env,
            read_file: &read,
            hostname: Some(HOST.into()),
        })
    }
}

/// A variable, or a few joined (`REPO and ORG`), each a setting or another image's variable.
fn known_var(var: &str) -> bool {
    let known =
        |v: &str| SETTINGS.iter().any(|s| s.name == v) || FOREIGN.iter().any(|(n, _)| *n == v);
    var.split([' ', ',', '+', '/'])
        .filter(|w| !w.is_empty() && !matches!(*w, "and" | "or"))
        .all(known)
}

/// Every problem names a known variable and says what is wrong and how to fix it; a secret's
/// value is never shown, nor printed. `baseline` is what the same settings print with every
/// secret replaced: a secret found there is a message's own words (`-----BEGIN R`), not a leak.
fn well_formed(p: &Problems, secrets: &[&str], baseline: &str) -> Result<(), TestCaseError> {
    prop_assert!(!p.0.is_empty(), "an error without a problem");
    let printed = p.to_string();
    for problem in &p.0 {
        prop_assert!(known_var(&problem.var), "unknown variable in {problem:?}");
        prop_assert!(!problem.what.trim().is_empty(), "no what in {problem:?}");
        prop_assert!(!problem.fix.trim().is_empty(), "no fix in {problem:?}");
        let setting = SETTINGS.iter().find(|s| s.name == problem.var);
        if setting.is_some_and(|s| s.kind.is_secret()) {
            prop_assert!(
                problem.value.is_none(),
                "a secret's value shown: {problem:?}"
            );
        }
    }
    for secret in secrets {
        let secret = secret.trim();
        // Short strings may be words of a message by chance.
        if secret.chars().count() >= 6 && !baseline.contains(secret) {
            prop_assert!(!printed.contains(secret), "a secret printed: {printed}");
        }
    }
    Ok(())
}

/// A secret's stand-in, for the baseline of [`well_formed`].
const NEUTRAL: &str = "neutral-secret-value";

/// Every loader's printed problems.
fn printed_all(g: &Given) -> String {
    [
        g.with(|i| config::load_run(i).err()),
        g.with(|i| config::load_probe(i).err()),
        g.with(|i| config::load_api(i).err()),
        g.with(|i| config::load_scale(i).err()),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.to_string())
    .collect()
}

/// Runs every loader on `g`: none panics, and every refusal is well formed.
fn load_all(g: &Given, secrets: &[&str]) -> Result<(), TestCaseError> {
    let mut neutral = g.clone();
    for v in neutral.env.values_mut() {
        if secrets.iter().any(|s| v.to_str() == Some(s)) {
            *v = NEUTRAL.into();
        }
    }
    let baseline = printed_all(&neutral);
    let checks = [
        g.with(|i| config::load_run(i).err()),
        g.with(|i| config::load_probe(i).err()),
        g.with(|i| config::load_api(i).err()),
        g.with(|i| config::load_scale(i).err()),
    ];
    for p in checks.into_iter().flatten() {
        well_formed(&p, secrets, &baseline)?;
    }
    Ok(())
}

/// One setting (by index) and a value for it: arbitrary, or near its kind's valid forms.
fn setting_value() -> impl Strategy<Value = (usize, String)> {
    (0..SETTINGS.len()).prop_flat_map(|i| (Just(i), text_near(seeds(SETTINGS[i].kind))))
}

/// The long-run groups of FUZZ.md: `settings`, `probe`, `markers`, `json`, `daemon`.
mod settings {
    use super::*;

    proptest! {
        /// Every setting, given any text as a variable or a flag: no loader panics, every problem
        /// is well formed and shows no secret.
        #[test]
        fn any_text_in_any_setting_is_refused_cleanly(
            (i, value) in setting_value(),
            as_flag in any::<bool>(),
        ) {
            let setting = &SETTINGS[i];
            let mut g = Given::valid();
            if as_flag && setting.flag().is_some() {
                g.flags.insert(setting.name.into(), value.clone());
            } else {
                g.env.insert(setting.name.into(), value.clone().into());
            }
            let secrets: Vec<&str> =
                if setting.kind.is_secret() { vec![value.as_str()] } else { vec![] };
            load_all(&g, &secrets)?;
        }

        /// Several settings at once, any of them odd: the rules that span settings see every
        /// combination of refused, defaulted and given values.
        #[test]
        fn several_settings_at_once_are_refused_cleanly(
            values in prop::collection::vec(setting_value(), 1..8),
            bare in any::<bool>(),
        ) {
            let mut g = if bare { Given::default() } else { Given::valid() };
            for (i, v) in &values {
                g.env.insert(SETTINGS[*i].name.into(), v.clone().into());
            }
            let secrets: Vec<&str> = values
                .iter()
                .filter(|(i, _)| SETTINGS[*i].kind.is_secret())
                .map(|(_, v)| v.as_str())
                .collect();
            load_all(&g, &secrets)?;
        }

        /// A variable that is not UTF-8 is refused by name, never shown.
        #[test]
        fn non_utf8_variables_are_refused(
            i in 0..SETTINGS.len(),
            (mut bytes, at) in (prop::collection::vec(any::<u8>(), 0..16), any::<prop::sample::Index>()),
        ) {
            use std::os::unix::ffi::OsStringExt;
            // A byte that never starts nor continues UTF-8.
            bytes.insert(at.index(bytes.len() + 1), 0xff);
            let mut g = Given::valid();
            g.env.insert(SETTINGS[i].name.into(), OsString::from_vec(bytes));
            load_all(&g, &[])?;
        }

        /// ACCESS_TOKEN_FILE: the content is the token, trimmed; one word or refused, naming the
        /// file and never its content.
        #[test]
        fn access_token_file_content_is_one_word_or_refused(
            content in prop_oneof![
                any::<String>(),
                ("[a-zA-Z0-9_]{12,40}", "[ \t\r\n]{0,3}", "[ \t\r\n]{0,3}", select(vec!["", "\u{feff}", " x", "\0"]))
                    .prop_map(|(t, a, b, odd)| format!("{a}{t}{odd}{b}")),
            ],
            readable in prop::bool::weighted(0.9),
        ) {
            let path = PathBuf::from("/run/secrets/token");
            let mut g = Given::default();
            g.env.insert("REPO".into(), "octo-org/octo-repo".into());
            g.env.insert("ACCESS_TOKEN_FILE".into(), path.clone().into());
            if readable {
                g.files.insert(path.clone(), content.clone());
            }
            match g.with(config::load_run) {
                Ok(s) => {
                    prop_assert!(readable);
                    let token = content.trim();
                    prop_assert!(!token.is_empty() && !token.chars().any(|c| c.is_whitespace() || c.is_control()));
                    match &s.registration {
                        config::Registration::Api { auth: config::Auth::Token(t), .. } => {
                            prop_assert_eq!(t.expose(), token);
                        }
                        other => prop_assert!(false, "{other:?}"),
                    }
                    prop_assert_eq!(s.secret_files, vec![path]);
                }
                Err(p) => {
                    let mut neutral = g.clone();
                    neutral.files.insert(path.clone(), NEUTRAL.into());
                    well_formed(&p, &[content.as_str()], &printed_all(&neutral))?;
                    prop_assert!(p.0.iter().any(|p| p.var == "ACCESS_TOKEN_FILE"
                        && p.value.as_deref() == Some("/run/secrets/token")), "{p}");
                }
            }
        }

        /// APP_PRIVATE_KEY_FILE: the test key, mangled (lines dropped, characters changed,
        /// line ends, `\n` escapes): a usable key or a refusal that names the file.
        #[test]
        fn app_private_key_file_is_a_usable_key_or_refused(
            content in prop_oneof![
                1 => any::<String>(),
                1 => Just(KEY.to_string()),
                1 => Just(KEY.replace('\n', "\r\n")),
                1 => Just(KEY.replace('\n', "\\n")),
                4 => (edits(), any::<prop::sample::Index>()).prop_map(|(ops, cut)| {
                    let lines: Vec<&str> = KEY.lines().collect();
                    let drop = cut.index(lines.len() + 3);
                    let kept: Vec<&str> = lines
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != drop)
                        .map(|(_, l)| *l)
                        .collect();
                    mutate(&kept.join("\n"), &ops)
                }),
            ],
        ) {
            let path = PathBuf::from("/run/secrets/app.pem");
            let mut g = Given::default();
            g.env.insert("ORG".into(), "octo-org".into());
            g.env.insert("APP_ID".into(), "123456".into());
            g.env.insert("APP_INSTALLATION_ID".into(), "7".into());
            g.env.insert("APP_PRIVATE_KEY_FILE".into(), path.clone().into());
            g.files.insert(path, content.clone());
            match g.with(config::load_run) {
                Ok(s) => {
                    let app = matches!(
                        s.registration,
                        config::Registration::Api { auth: config::Auth::App { .. }, .. }
                    );
                    prop_assert!(app);
                }
                Err(p) => {
                    // Lines of the key, never a message's words.
                    let secret_lines: Vec<&str> =
                        content.lines().filter(|l| l.len() >= 40).collect();
                    let mut neutral = g.clone();
                    neutral.files.insert(PathBuf::from("/run/secrets/app.pem"), NEUTRAL.into());
                    well_formed(&p, &secret_lines, &printed_all(&neutral))?;
                    prop_assert!(p.0.iter().any(|p| p.var == "APP_PRIVATE_KEY_FILE"), "{p}");
                }
            }
        }

        /// ACTIONS_RUNNER_INPUT_JITCONFIG: base64 of JSON holding a `.runner` string, else
        /// refused; the runner's name is the `agentName` inside, when it says one.
        #[test]
        fn jit_configs_are_parsed_and_name_their_runner(
            agent_name in prop_oneof![
                3 => ".{0,20}".prop_map(Value::from),
                1 => json_value(),
            ],
            bom in any::<bool>(),
            runner in prop_oneof![
                4 => Just(None),
                1 => json_value().prop_map(Some),
            ],
            top in prop_oneof![
                6 => Just(None),
                1 => any::<String>().prop_map(Some),
                1 => json_value().prop_map(|v| Some(b64(v.to_string()))),
            ],
            pad in select(vec!["", " ", "\n", "\t\n"]),
        ) {
            let doc = json!({"agentId": 7, "agentName": agent_name.clone(), "poolId": 1}).to_string();
            let doc = if bom { format!("\u{feff}{doc}") } else { doc };
            let dot_runner = runner.clone().unwrap_or_else(|| Value::from(b64(&doc)));
            let jit = top.clone().unwrap_or_else(|| {
                b64(json!({".runner": dot_runner, ".credentials": "e30="}).to_string())
            });
            let raw = format!("{pad}{jit}{pad}");
            let mut g = Given::default();
            g.env.insert("ACTIONS_RUNNER_INPUT_JITCONFIG".into(), raw.clone().into());
            match g.with(config::load_run) {
                Ok(s) => {
                    prop_assert!(top.is_none() || top.as_ref().is_some_and(|t| !t.trim().is_empty()));
                    let want = match (&runner, &agent_name, &top) {
                        (None, Value::String(n), None) if !n.is_empty() => n.clone(),
                        _ => format!("sysrunner-{HOST}"),
                    };
                    if top.is_none() {
                        prop_assert_eq!(s.runner.name, want);
                    }
                }
                Err(p) => {
                    let mut neutral = g.clone();
                    neutral.env.insert("ACTIONS_RUNNER_INPUT_JITCONFIG".into(), NEUTRAL.into());
                    well_formed(&p, &[raw.as_str()], &printed_all(&neutral))?;
                    prop_assert!(top.is_some() || !dot_runner.is_string(), "refused a valid JIT config: {p}");
                }
            }
        }
    }

    // The exact forms of the number-like kinds, given as flags (an empty variable is unset).

    fn digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }

    /// A whole number as u128, or `None` past that.
    fn whole(s: &str) -> Option<u128> {
        if !digits(s) {
            return None;
        }
        let t = s.trim_start_matches('0');
        if t.len() > 30 {
            return None;
        }
        Some(t.parse().unwrap_or(0))
    }

    /// `\d+(ms|[smh])?`, at most a week: milliseconds.
    fn duration_spec(raw: &str) -> Option<u64> {
        let (n, scale) = if let Some(n) = raw.strip_suffix("ms") {
            (n, 1)
        } else {
            match raw.as_bytes().last()? {
                b's' => (&raw[..raw.len() - 1], 1000),
                b'm' => (&raw[..raw.len() - 1], 60_000),
                b'h' => (&raw[..raw.len() - 1], 3_600_000),
                _ => (raw, 1000),
            }
        };
        let ms = whole(n)? * scale;
        (ms <= 7 * 24 * 3_600_000).then_some(ms as u64)
    }

    /// `\d+([kmg])?b?` in either case, at least 6 MiB and at most u64.
    fn bytes_spec(raw: &str) -> Option<u64> {
        let lower = raw.to_ascii_lowercase();
        let lower = lower.strip_suffix('b').unwrap_or(&lower);
        let (n, scale) = match lower.as_bytes().last()? {
            b'k' => (&lower[..lower.len() - 1], 1u128 << 10),
            b'm' => (&lower[..lower.len() - 1], 1 << 20),
            b'g' => (&lower[..lower.len() - 1], 1 << 30),
            _ => (lower, 1),
        };
        let b = whole(n)? * scale;
        (b >= 6 << 20 && b <= u64::MAX as u128).then_some(b as u64)
    }

    /// `\d*(\.\d{0,9})?`, not empty, above 0, in billionths.
    fn cpus_spec(raw: &str) -> Option<u64> {
        let (w, f) = raw.split_once('.').unwrap_or((raw, ""));
        let ok = |s: &str| s.is_empty() || digits(s);
        if !ok(w) || !ok(f) || (w.is_empty() && f.is_empty()) || f.len() > 9 {
            return None;
        }
        let w = if w.is_empty() { 0 } else { whole(w)? };
        let f: u128 = format!("{f:0<9}").parse().ok()?;
        let n = w * 1_000_000_000 + f;
        (n > 0 && n <= u64::MAX as u128).then_some(n as u64)
    }

    fn number_text(units: Vec<&'static str>) -> BoxedStrategy<String> {
        let units2 = units.clone();
        prop_oneof![
            2 => ("[0-9]{1,22}", select(units2)).prop_map(|(n, u)| format!("{n}{u}")),
            1 => ("[0-9]{0,6}", "[.][0-9]{0,11}").prop_map(|(a, b)| format!("{a}{b}")),
            1 => ("[+-]?[0-9 ]{0,8}", select(vec!["", "s", "m", "h", "k", "g", "b", "mb", "KB"]))
                .prop_map(|(n, u)| format!("{n}{u}")),
            1 => ("[+][0-9]{1,8}", select(units.clone())).prop_map(|(n, u)| format!("{n}{u}")),
            2 => text_near(vec!["90".into(), "5m".into(), "512m".into(), "1.5".into(), "4194304".into(), "1400".into()]),
        ]
        .boxed()
    }

    fn scale_with(name: &str, raw: &str) -> Result<config::ScaleSettings, Problems> {
        let mut g = Given::valid();
        g.flags.insert(name.into(), raw.into());
        g.with(config::load_scale)
    }

    fn only_about(p: &Problems, name: &str) -> Result<(), TestCaseError> {
        well_formed(p, &[], "")?;
        for problem in &p.0 {
            prop_assert_eq!(&problem.var, name);
        }
        Ok(())
    }

    proptest! {
        /// `duration` accepts exactly `\d+(ms|[smh])?` up to a week, and means what it says.
        #[test]
        fn duration_accepts_exactly_whole_numbers_with_a_unit_up_to_a_week(
            raw in number_text(vec!["", "s", "m", "h", "d", "ms", "S", " s", "sec"]),
        ) {
            match (config::parse_duration(&raw), duration_spec(&raw)) {
                (Ok(d), Some(ms)) => prop_assert_eq!(d, Duration::from_millis(ms)),
                (Err(b), None) => prop_assert!(!b.what.is_empty() && !b.fix.is_empty()),
                (got, want) => prop_assert!(false, "{raw:?}: got {got:?}, want {want:?}"),
            }
        }

        /// Every duration up to a week, written in any of its units, reads back as itself.
        #[test]
        fn durations_round_trip(secs in 0u64..=7 * 24 * 3600, zeros in 0usize..3) {
            let z = "0".repeat(zeros);
            let mut forms = vec![format!("{z}{secs}"), format!("{z}{secs}s")];
            if secs % 60 == 0 {
                forms.push(format!("{z}{}m", secs / 60));
            }
            if secs % 3600 == 0 {
                forms.push(format!("{z}{}h", secs / 3600));
            }
            for f in forms {
                prop_assert_eq!(config::parse_duration(&f).ok(), Some(Duration::from_secs(secs)), "{}", f);
            }
        }

        /// SCALE_MEMORY (`bytes`): exactly a whole number with an optional k, m or g (and b),
        /// at least 6 MiB.
        #[test]
        fn bytes_accepts_exactly_sizes_of_at_least_6_mib(
            raw in number_text(vec!["", "k", "m", "g", "b", "kb", "MB", "Gb", "t", "kk"]),
        ) {
            match (scale_with("SCALE_MEMORY", &raw), bytes_spec(&raw)) {
                (Ok(s), Some(b)) => {
                    prop_assert_eq!(s.limits.memory, Some(b));
                    prop_assert!(b >= 6 << 20);
                }
                (Err(p), None) => only_about(&p, "SCALE_MEMORY")?,
                (got, want) => prop_assert!(false, "{raw:?}: got {got:?}, want {want:?}"),
            }
        }

        /// SCALE_CPUS (`nano_cpus`): a decimal above 0 with at most nine places, exactly.
        #[test]
        fn cpus_accepts_exactly_decimals_above_zero(raw in number_text(vec!["", ".", ".5", "e3"])) {
            match (scale_with("SCALE_CPUS", &raw), cpus_spec(&raw)) {
                (Ok(s), Some(n)) => prop_assert_eq!(s.limits.nano_cpus, Some(n)),
                (Err(p), None) => only_about(&p, "SCALE_CPUS")?,
                (got, want) => prop_assert!(false, "{raw:?}: got {got:?}, want {want:?}"),
            }
        }

        /// SCALE_PIDS (`count`): a whole number from 1 up to 4194304, exactly.
        #[test]
        fn count_accepts_exactly_whole_numbers_up_to_pid_max(raw in number_text(vec![""])) {
            // A limit of 0 would start no process: refused by the rule of SCALE_PIDS.
            let want = whole(&raw).filter(|n| (1..=1 << 22).contains(n)).map(|n| n as u32);
            match (scale_with("SCALE_PIDS", &raw), want) {
                (Ok(s), Some(n)) => prop_assert_eq!(s.limits.pids, Some(n)),
                (Err(p), None) => only_about(&p, "SCALE_PIDS")?,
                (got, want) => prop_assert!(false, "{raw:?}: got {got:?}, want {want:?}"),
            }
        }

        /// DOCKER_MTU (`mtu`): `detect` in any case, or a whole number from 68 to 65535.
        #[test]
        fn mtu_accepts_exactly_detect_or_68_to_65535(
            raw in prop_oneof![number_text(vec![""]), text_near(vec!["detect".into()])],
        ) {
            let mut g = Given::default();
            g.flags.insert("DOCKER_MTU".into(), raw.clone());
            let want = if raw.eq_ignore_ascii_case("detect") {
                Some(None)
            } else {
                whole(&raw).filter(|n| (68..=65535).contains(n)).map(|n| Some(n as u32))
            };
            match (g.with(config::load_probe), want) {
                (Ok(s), Some(m)) => prop_assert_eq!(s.docker.mtu, m),
                (Err(p), None) => only_about(&p, "DOCKER_MTU")?,
                (got, want) => prop_assert!(false, "{raw:?}: got {:?}, want {want:?}", got.map(|s| s.docker.mtu)),
            }
        }

        /// SCALE_LISTEN (`listen`): a port alone is every IPv4 address; anything else is a socket
        /// address as Rust reads one.
        #[test]
        fn listen_accepts_exactly_a_port_or_a_socket_address(
            raw in prop_oneof![
                number_text(vec![""]),
                text_near(seeds(Kind::Listen)),
                (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(a, p)| std::net::SocketAddr::new(a, p).to_string()),
            ],
        ) {
            let want = match whole(&raw) {
                Some(p) => u16::try_from(p).ok().map(|p| std::net::SocketAddr::from(([0, 0, 0, 0], p))),
                None => raw.parse().ok(),
            };
            match (scale_with("SCALE_LISTEN", &raw), want) {
                (Ok(s), Some(a)) => prop_assert_eq!(s.listen, Some(a)),
                (Err(p), None) => only_about(&p, "SCALE_LISTEN")?,
                (got, want) => prop_assert!(false, "{raw:?}: got {:?}, want {want:?}", got.map(|s| s.listen)),
            }
        }

        /// SCALE_IMAGE (`image`): what is accepted is kept as given, and is a reference Docker
        /// takes: no white space or control character, a lowercase name.
        #[test]
        fn images_accepted_are_references(raw in text_near(seeds(Kind::Image))) {
            match scale_with("SCALE_IMAGE", &raw) {
                Ok(s) => {
                    prop_assert_eq!(&s.image, &raw);
                    prop_assert!(!raw.chars().any(|c| c.is_whitespace() || c.is_control()));
                    let name = raw.split('@').next().unwrap_or_default();
                    let path = match name.rsplit_once(':') {
                        Some((p, tag)) if !tag.contains('/') => p,
                        _ => name,
                    };
                    prop_assert!(!path.chars().any(|c| c.is_ascii_uppercase()), "{raw:?}");
                }
                Err(p) => only_about(&p, "SCALE_IMAGE")?,
            }
        }

        /// GITHUB_URL and DOCKER_REGISTRY_MIRRORS (`url`): what is accepted is an http(s) URL that
        /// another parser (Go's, in dockerd) reads the same: `scheme://host…`, no white space or
        /// control characters, no query, fragment or user.
        #[test]
        fn urls_accepted_are_plain_http_urls(
            raw in prop_oneof![
                text_near(seeds(Kind::Url)),
                url_text(),
            ],
        ) {
            let mut g = Given::valid();
            g.flags.insert("GITHUB_URL".into(), raw.clone());
            match g.with(config::load_api) {
                Ok(s) => {
                    prop_assert!(go_would_take_mirror(&s.github.web), "{raw:?} became {:?}", s.github.web);
                    prop_assert!(!s.github.web.ends_with('/'));
                }
                Err(p) => well_formed(&p, &[], "")?,
            }
            let mut g = Given::default();
            g.flags.insert("DOCKER_REGISTRY_MIRRORS".into(), raw.clone());
            match g.with(config::load_probe) {
                Ok(s) => {
                    for m in &s.docker.registry_mirrors {
                        prop_assert!(go_would_take_mirror(m), "{raw:?} became {m:?}");
                    }
                }
                Err(p) => only_about(&p, "DOCKER_REGISTRY_MIRRORS")?,
            }
        }
    }
}

/// URLs near valid ones: odd schemes, separators, hosts, ports and paths.
fn url_text() -> BoxedStrategy<String> {
    (
        select(vec![
            "https://",
            "http://",
            "HTTPS://",
            "https:",
            "https:/",
            "https:\\\\",
            "ftp://",
            "",
        ]),
        select(vec![
            "mirror.example",
            "127.0.0.1",
            "[::1]",
            "MIRROR.Example",
            "xn--bcher-kva.example",
            "bücher.example",
            "m\tirror.example",
            "u@mirror.example",
            "mirror.example.",
        ]),
        select(vec!["", ":5000", ":0", ":65536", ":x"]),
        select(vec!["", "/", "/v2/", "/a b", "/a\nb", "?q=1", "#f", "//x"]),
    )
        .prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}"))
        .boxed()
}

/// What dockerd's `registry.ValidateMirror` (moby, Go's `net/url`) takes: a `scheme://` that is
/// http or https (any case), no ASCII control character (Go refuses them), no white space in the
/// host, no query, fragment or user. dockerd checks its mirrors only when it starts, not with
/// `--validate`.
fn go_would_take_mirror(m: &str) -> bool {
    let Some((scheme, rest)) = m.split_once("://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
        && !host.is_empty()
        && !m.chars().any(|c| c.is_ascii_control())
        && !host.chars().any(char::is_whitespace)
        && !m.contains('?')
        && !m.contains('#')
        && !host.contains('@')
}

// ---------------------------------------------------------------------------------------------
// The probe's files: mountinfo, cgroup, status, id maps, namespace links, through `--root`.

/// Each fixture tree's files, by path below the tree.
static FIXTURES: LazyLock<Vec<BTreeMap<String, String>>> = LazyLock::new(|| {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe");
    let mut trees = Vec::new();
    for dir in std::fs::read_dir(&base).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let mut files = BTreeMap::new();
        for rel in PROBE_FILES {
            if let Ok(t) = std::fs::read_to_string(dir.join(rel)) {
                files.insert(rel.to_string(), t);
            }
        }
        for rel in ["proc/self/ns/user", "proc/self/ns/pid"] {
            if let Ok(t) = std::fs::read_link(dir.join(rel)) {
                files.insert(rel.to_string(), t.to_string_lossy().into_owned());
            }
        }
        trees.push(files);
    }
    assert!(trees.len() >= 5, "the probe fixtures are missing");
    trees
});

const PROBE_FILES: &[&str] = &[
    "proc/self/status",
    "proc/self/mountinfo",
    "proc/self/uid_map",
    "proc/self/gid_map",
    "proc/self/cgroup",
    "proc/net/ip_tables_names",
    "proc/net/ip6_tables_names",
    "sys/fs/cgroup/cgroup.controllers",
];

/// Every line of every fixture's `rel`.
fn fixture_lines(rel: &str) -> Vec<String> {
    let mut v: Vec<String> = FIXTURES
        .iter()
        .filter_map(|t| t.get(rel))
        .flat_map(|t| t.lines().map(String::from).collect::<Vec<_>>())
        .collect();
    if v.is_empty() {
        v.push(String::new());
    }
    v
}

/// A file of lines near the fixtures' lines of `rel`.
fn file_near(rel: &'static str) -> BoxedStrategy<String> {
    prop::collection::vec(text_near(fixture_lines(rel)), 0..12)
        .prop_map(|lines| lines.join("\n"))
        .boxed()
}

/// How the kernel writes a path in mountinfo: space, tab, newline and backslash as `\ooo`.
fn mangle(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A path as a mount point or root: `/` and components of any characters but `/` and NUL.
fn mount_path() -> BoxedStrategy<String> {
    prop_oneof![
        2 => select(vec!["/", "/var/lib/docker", "/sys/fs/cgroup", "/sys/fs/cgroup/pids", "/proc/sys", "/my dir", "/a\\b"])
            .prop_map(String::from),
        3 => prop::collection::vec("[^/\0]{1,6}", 1..4).prop_map(|c| format!("/{}", c.join("/"))),
        1 => prop::collection::vec(prop::collection::vec(odd_char(), 1..5), 1..3).prop_map(|cs| {
            let parts: Vec<String> = cs
                .into_iter()
                .map(|c| c.into_iter().filter(|c| *c != '/' && *c != '\0').collect::<String>())
                .filter(|p| !p.is_empty())
                .collect();
            format!("/{}", parts.join("/"))
        }),
    ]
    .boxed()
}

fn opts() -> BoxedStrategy<Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            select(vec![
                "rw",
                "ro",
                "nosuid",
                "nodev",
                "noexec",
                "relatime",
                "memory",
                "pids",
                "nsdelegate",
                "user_id=0"
            ])
            .prop_map(String::from),
            "[a-z_=0-9]{1,8}",
        ],
        1..5,
    )
    .boxed()
}

#[derive(Debug, Clone)]
struct MountLine {
    root: String,
    mount_point: String,
    opts: Vec<String>,
    optional: Vec<String>,
    fstype: String,
    source: String,
    super_opts: Vec<String>,
}

impl MountLine {
    fn render(&self, id: usize) -> String {
        let mut f = vec![
            format!("{}", 100 + id),
            "1".into(),
            "0:42".into(),
            mangle(&self.root),
            mangle(&self.mount_point),
            self.opts.join(","),
        ];
        f.extend(self.optional.iter().cloned());
        f.push("-".into());
        f.push(self.fstype.clone());
        f.push(mangle(&self.source));
        f.push(self.super_opts.join(","));
        f.join(" ")
    }
}

fn mount_line() -> impl Strategy<Value = MountLine> {
    (
        mount_path(),
        mount_path(),
        opts(),
        prop::collection::vec(
            prop_oneof![
                (1u32..999).prop_map(|n| format!("shared:{n}")),
                (1u32..999).prop_map(|n| format!("master:{n}")),
                Just("unbindable".to_string()),
            ],
            0..3,
        ),
        prop_oneof![
            select(vec![
                "ext4",
                "overlay",
                "cgroup",
                "cgroup2",
                "fuse",
                "fuse.sysboxfs",
                "tmpfs",
                "proc"
            ])
            .prop_map(String::from),
            "[a-z0-9.]{1,10}",
        ],
        prop_oneof![
            select(vec!["sysboxfs", "/dev/vda", "overlay", "none"]).prop_map(String::from),
            "[^\0\r]{1,12}",
        ],
        opts(),
    )
        .prop_map(
            |(root, mount_point, opts, optional, fstype, source, super_opts)| MountLine {
                root,
                mount_point,
                opts,
                optional,
                fstype,
                source,
                super_opts,
            },
        )
}

mod probe_files {
    use super::*;

    proptest! {
        /// Any text as mountinfo: parsed without a panic, and every mount it finds comes from a
        /// line of it (its file system type is a field of some line).
        #[test]
        fn mountinfo_of_any_text_never_panics(
            text in prop_oneof![
                any::<String>(),
                file_near("proc/self/mountinfo"),
                // Escapes the kernel writes, and ones it never does.
                prop::collection::vec(select(vec!["\\", "040", "134", "777", "400", "0", "7", " ", "-", "/", "x", "ü", "\n", "1 2 3:4 / /"]), 0..40)
                    .prop_map(|t| t.concat()),
            ],
            path in prop_oneof![mount_path(), any::<String>()],
        ) {
            let mounts = mountinfo::parse(&text);
            for m in &mounts {
                prop_assert!(text.lines().any(|l| l.split(' ').any(|f| f == m.fstype)), "{m:?}");
            }
            if let Some(m) = mountinfo::mount_of(&mounts, &path) {
                let mp = m.mount_point.as_str();
                prop_assert!(mp == "/" || path == mp || path.starts_with(&format!("{mp}/")), "{path:?} on {mp:?}");
            }
        }

        /// A mountinfo line as the kernel writes it, with any mount point, source and options:
        /// the entry parsed from it has exactly that line's fields.
        #[test]
        fn a_mountinfo_entry_has_its_lines_fields(lines in prop::collection::vec(mount_line(), 1..6)) {
            let text: Vec<String> = lines.iter().enumerate().map(|(i, l)| l.render(i)).collect();
            let mounts = mountinfo::parse(&text.join("\n"));
            prop_assert_eq!(mounts.len(), lines.len(), "{:?}", text);
            for (m, l) in mounts.iter().zip(&lines) {
                prop_assert_eq!(&m.mount_point, &l.mount_point);
                prop_assert_eq!(&m.fstype, &l.fstype);
                prop_assert_eq!(&m.source, &l.source);
                prop_assert_eq!(&m.super_options, &l.super_opts);
                let ro = l.opts.iter().chain(&l.super_opts).any(|o| o == "ro");
                prop_assert_eq!(m.rw, !ro);
            }
            // The mount a listed mount point lives on is the last mount listed there or above it.
            for l in &lines {
                let m = mountinfo::mount_of(&mounts, &l.mount_point).expect("its own mount");
                let last = mounts
                    .iter()
                    .rposition(|x| x.mount_point == "/" || l.mount_point == x.mount_point
                        || l.mount_point.starts_with(&format!("{}/", x.mount_point)))
                    .unwrap();
                prop_assert_eq!(m, &mounts[last]);
            }
        }

        /// A whole tree for `probe --root`, each file near a fixture's (or any text): the facts,
        /// the verdict, the dockerd plan and both renderings of the report come out without a
        /// panic, and the facts are the files' (uid, capabilities, cgroup path).
        #[test]
        fn probe_root_reads_any_tree(
            base in 0usize..64,
            replaced in prop::collection::btree_map(select(PROBE_FILES.to_vec()), prop_oneof![
                1 => any::<String>(),
                3 => Just(String::new()),
            ], 0..4),
            status in prop_oneof![Just(None), file_near("proc/self/status").prop_map(Some)],
            cgroup in prop_oneof![Just(None), file_near("proc/self/cgroup").prop_map(Some)],
            mounts in prop_oneof![Just(None), file_near("proc/self/mountinfo").prop_map(Some),
                prop::collection::vec(mount_line(), 0..8).prop_map(|ls| Some(ls.iter().enumerate().map(|(i, l)| l.render(i)).collect::<Vec<_>>().join("\n")))],
            ns_user in prop_oneof![Just(None), text_near(vec!["user:[4026531837]".into(), "user:[4026532501]".into()]).prop_map(Some)],
            ns_pid in prop_oneof![Just(None), text_near(vec!["pid:[4026531836]".into(), "pid:[4026532503]".into()]).prop_map(Some)],
            dev_fuse in any::<bool>(),
        ) {
            let mut files = FIXTURES[base % FIXTURES.len()].clone();
            for (rel, t) in replaced {
                files.insert(rel.to_string(), t);
            }
            for (rel, t) in [("proc/self/status", status), ("proc/self/cgroup", cgroup), ("proc/self/mountinfo", mounts),
                ("proc/self/ns/user", ns_user), ("proc/self/ns/pid", ns_pid)] {
                if let Some(t) = t {
                    files.insert(rel.to_string(), t);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            for (rel, t) in &files {
                let to = dir.path().join(rel);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                if rel.contains("/ns/") {
                    if !t.is_empty() && !t.contains('\0') && t.len() < 4000 {
                        std::os::unix::fs::symlink(t, &to).unwrap();
                    }
                } else {
                    std::fs::write(&to, t).unwrap();
                }
            }
            if dev_fuse {
                std::fs::create_dir_all(dir.path().join("dev")).unwrap();
                std::fs::write(dir.path().join("dev/fuse"), "").unwrap();
            }
            let facts = probe::read_facts(dir.path());

            let status = files.get("proc/self/status").cloned().unwrap_or_default();
            let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(':')).map(str::trim);
            let euid = field("Uid").and_then(|v| v.split_whitespace().nth(1)).and_then(|v| v.parse::<u32>().ok());
            prop_assert_eq!(facts.euid, euid);
            let cap_eff = field("CapEff").and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0);
            prop_assert_eq!(facts.caps.effective, cap_eff);
            if facts.cgroup.version == Some(probe::CgroupVersion::V2) {
                let own = files.get("proc/self/cgroup").cloned().unwrap_or_default();
                let path = own.lines().find_map(|l| l.strip_prefix("0::")).map(String::from);
                prop_assert_eq!(&facts.cgroup.path, &path);
            }
            // uid_map: every range read is a line of three whole numbers.
            let uid_map = files.get("proc/self/uid_map").cloned().unwrap_or_default();
            for r in &facts.user_namespace.uid_map {
                let from_line = |l: &str| {
                    let f: Vec<Option<u64>> = l.split_whitespace().take(3).map(|x| x.parse().ok()).collect();
                    f == [Some(r.inside), Some(r.outside), Some(r.count)]
                };
                prop_assert!(uid_map.lines().any(from_line), "{r:?}");
            }
            for m in &facts.sysboxfs {
                prop_assert!(m.mount_point.starts_with('/'));
            }

            let docker = default_docker();
            let report = sysrunner::assess::report(facts, None, &docker, None, None, &BTreeMap::new());
            prop_assert_eq!(report.dockerd.is_some(), report.runtime.supported());
            serde_json::to_string(&report).unwrap();
            let _ = report.human();
        }
    }
}

fn default_docker() -> DockerSettings {
    DockerSettings {
        dockerd: DockerdMode::On,
        registry_mirrors: vec![],
        registry_cache: None,
        registry_cache_timeout: std::time::Duration::from_secs(2),
        image_store: ImageStore::GraphDriver,
        mtu: None,
        data: DataPolicy::Ephemeral,
        ready_timeout: Duration::from_secs(60),
    }
}

// ---------------------------------------------------------------------------------------------
// The runner's output markers.

fn timestamp() -> impl Strategy<Value = String> {
    (
        2000u32..2100,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z"))
}

/// A job's display name: anything on one line, marker phrases included (a workflow's author
/// names its jobs).
fn job_name() -> BoxedStrategy<String> {
    prop_oneof![
        2 => "[^\n\r]{0,30}",
        2 => text_near(vec![
            "build (ubuntu)".into(),
            "Listening for Jobs".into(),
            "Running job: x".into(),
            "Job x completed with result: Failed".into(),
            "Build Job 1".into(),
            "Connected to GitHub".into(),
            "Current runner version: '9'".into(),
        ])
        .prop_map(|s| s.replace(['\n', '\r'], " ")),
    ]
    .boxed()
}

fn any_marker() -> impl Strategy<Value = Marker> {
    prop_oneof![
        Just(Marker::Connected),
        Just(Marker::Listening),
        ".{0,8}".prop_map(Marker::Version),
        ".{0,8}".prop_map(Marker::JobStarted),
        (".{0,8}", ".{0,8}").prop_map(|(job, result)| Marker::JobCompleted { job, result }),
    ]
}

mod runner_markers {
    use super::*;

    proptest! {
        /// Any line: parsed without a panic.
        #[test]
        fn any_line_parses_without_panic(line in prop_oneof![any::<String>(), job_name(),
            (timestamp(), job_name()).prop_map(|(t, n)| format!("{t}: {n}"))]) {
            let _ = markers::parse(&line);
        }

        /// `<time>: Running job: <name>` is that job started, whatever the name says.
        #[test]
        fn a_started_job_is_named_as_printed(t in timestamp(), name in job_name()) {
            let line = format!("{t}: Running job: {name}");
            prop_assert_eq!(markers::parse(&line), Some(Marker::JobStarted(name.trim_end().to_string())));
        }

        /// `<time>: Job <name> completed with result: <result>` is that job done with that result,
        /// whatever the name says.
        #[test]
        fn a_completed_job_is_named_as_printed(
            t in timestamp(),
            name in job_name(),
            result in prop_oneof![select(vec!["Succeeded", "Failed", "Canceled"]).prop_map(String::from), "[A-Za-z]{1,10}"],
        ) {
            let line = format!("{t}: Job {name} completed with result: {result}");
            prop_assert_eq!(markers::parse(&line), Some(Marker::JobCompleted { job: name, result }));
        }

        /// The markers without a job: listening, connected, the version.
        #[test]
        fn the_other_markers_are_read(t in timestamp(), v in "[0-9.]{1,12}", pad in "[ \t]{0,2}") {
            prop_assert_eq!(markers::parse(&format!("{t}: Listening for Jobs{pad}")), Some(Marker::Listening));
            prop_assert_eq!(markers::parse(&format!("√ Connected to GitHub{pad}")), Some(Marker::Connected));
            prop_assert_eq!(
                markers::parse(&format!("Current runner version: '{v}'{pad}")),
                Some(Marker::Version(v))
            );
        }

        /// Whatever order markers come in, a finished job stays finished, and a late
        /// `Listening` never ends a running job.
        #[test]
        fn states_never_go_back(ms in prop::collection::vec(any_marker(), 0..12)) {
            let mut s = State::Starting;
            for m in &ms {
                let next = s.clone().on(m);
                if matches!(s, State::Done { .. }) {
                    prop_assert_eq!(&next, &s);
                }
                if matches!(s, State::Busy { .. }) && *m == Marker::Listening {
                    prop_assert_eq!(&next, &s);
                }
                let _ = (next.phase(), next.as_str());
                s = next;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub's JSON answers.

fn job_fields() -> Vec<(&'static str, BoxedStrategy<Value>)> {
    vec![
        ("runnerRequestId", i(any::<i64>())),
        ("repositoryName", s(".{0,8}")),
        ("ownerName", s(".{0,8}")),
        ("jobId", s(".{0,8}")),
        ("jobWorkflowRef", s(".{0,8}")),
        ("jobDisplayName", s(".{0,8}")),
        ("workflowRunId", i(any::<i64>())),
        ("eventName", s(".{0,8}")),
        (
            "requestLabels",
            prop::collection::vec(".{0,6}", 0..3)
                .prop_map(|v| json!(v))
                .boxed(),
        ),
        ("queueTime", s(".{0,8}")),
        ("finishTime", s(".{0,8}")),
    ]
}

fn job_message() -> BoxedStrategy<Value> {
    let mut fields = job_fields();
    fields.extend([
        (
            "messageType",
            s(select(vec![
                "JobAvailable",
                "JobAssigned",
                "JobStarted",
                "JobCompleted",
                "SomethingNew",
            ])
            .prop_map(String::from)),
        ),
        ("acquireJobUrl", s(".{0,8}")),
        ("runnerId", u(any::<u64>())),
        ("runnerName", s(".{0,8}")),
        ("result", s(".{0,8}")),
    ]);
    object_near(fields)
}

/// Whether `v` has the JSON type each field wants (null too, for those read with a default).
fn well_typed_job_message(v: &Value) -> bool {
    let o = v.as_object().unwrap();
    let want = |k: &str, ok: &dyn Fn(&Value) -> bool| o.get(k).is_none_or(|x| x.is_null() || ok(x));
    let int = |x: &Value| x.is_i64();
    let uint = |x: &Value| x.is_u64();
    let st = |x: &Value| x.is_string();
    let strs = |x: &Value| x.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    let duplicate_free = true;
    duplicate_free
        && want("runnerRequestId", &int)
        && want("workflowRunId", &int)
        && want("runnerId", &uint)
        && want("requestLabels", &strs)
        && [
            "repositoryName",
            "ownerName",
            "jobId",
            "jobWorkflowRef",
            "jobDisplayName",
            "eventName",
            "queueTime",
            "finishTime",
            "messageType",
            "acquireJobUrl",
            "runnerName",
            "result",
        ]
        .iter()
        .all(|k| want(k, &st))
}

/// A JWT whose payload is `payload`.
fn jwt(payload: &Value) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig",
        enc.encode(r#"{"alg":"RS256"}"#),
        enc.encode(payload.to_string())
    )
}

mod github_json {
    use super::*;

    proptest! {
        /// A queue message's body, any text: read or refused, never a panic.
        #[test]
        fn any_body_is_read_or_refused(body in prop_oneof![any::<String>(), json_value().prop_map(|v| v.to_string())]) {
            let _ = scaleset::job_messages(&body);
        }

        /// A body of job messages whose fields have any JSON type: read exactly when every field
        /// has its type (or is null), each message as its type says.
        #[test]
        fn job_messages_with_any_field_types(msgs in prop::collection::vec(job_message(), 0..4)) {
            let body = Value::Array(msgs.clone()).to_string();
            let typed = msgs.iter().all(well_typed_job_message);
            match scaleset::job_messages(&body) {
                Ok(read) => {
                    prop_assert!(typed, "read an ill-typed body {body}");
                    prop_assert_eq!(read.len(), msgs.len());
                    for (r, m) in read.iter().zip(&msgs) {
                        let kind = m.get("messageType").and_then(Value::as_str).unwrap_or("");
                        let ok = match r {
                            scaleset::JobMessage::Available { .. } => kind == "JobAvailable",
                            scaleset::JobMessage::Assigned { .. } => kind == "JobAssigned",
                            scaleset::JobMessage::Started { .. } => kind == "JobStarted",
                            scaleset::JobMessage::Completed { .. } => kind == "JobCompleted",
                            scaleset::JobMessage::Other { message_type } => message_type == kind,
                        };
                        prop_assert!(ok, "{r:?} from {m}");
                    }
                }
                Err(_) => prop_assert!(!typed, "refused a well-typed body {body}"),
            }
        }

        /// The service's other answers, with any JSON type in each field: read or refused.
        #[test]
        fn scaleset_answers_with_any_field_types(
            set in object_near(vec![
                ("id", u(any::<u64>())), ("name", s(".{0,8}")), ("runnerGroupId", u(any::<u64>())),
                ("runnerGroupName", s(".{0,8}")),
                ("labels", prop::collection::vec(object_near(vec![("type", s(".{0,4}")), ("name", s(".{0,4}"))]), 0..3).prop_map(Value::Array).boxed()),
                ("RunnerSetting", object_near(vec![("disableUpdate", any::<bool>().prop_map(Value::from).boxed())])),
                ("runnerJitConfigUrl", s(".{0,8}")),
                ("statistics", object_near(vec![("totalAssignedJobs", i(any::<i64>())), ("totalBusyRunners", i(any::<i64>()))])),
            ]),
            msg in object_near(vec![("messageId", i(any::<i64>())), ("messageType", s(".{0,8}")), ("body", s(".{0,8}"))]),
            runner in object_near(vec![("id", u(any::<u64>())), ("name", s(".{0,8}")), ("runnerScaleSetId", u(any::<u64>()))]),
            group in object_near(vec![("id", u(any::<u64>())), ("name", s(".{0,8}")), ("isDefaultGroup", any::<bool>().prop_map(Value::from).boxed())]),
            list in prop::collection::vec(json_value(), 0..3),
        ) {
            if let Ok(back) = serde_json::from_value::<scaleset::ScaleSet>(set.clone()) {
                // What is sent reads back as itself.
                let sent = serde_json::to_value(&back).unwrap();
                let again: scaleset::ScaleSet = serde_json::from_value(sent).unwrap();
                prop_assert_eq!(again.name, back.name);
                prop_assert_eq!(again.labels, back.labels);
                prop_assert_eq!(again.runner_setting, back.runner_setting);
            }
            let _ = serde_json::from_value::<scaleset::QueueMessage>(msg.clone());
            if let Ok(m) = serde_json::from_value::<scaleset::QueueMessage>(msg) {
                let _ = scaleset::job_messages(&m.body);
            }
            let _ = serde_json::from_value::<scaleset::RunnerRef>(runner);
            let _ = serde_json::from_value::<scaleset::RunnerGroup>(group.clone());
            let _ = serde_json::from_value::<scaleset::Statistics>(group);
            let _ = serde_json::from_value::<Vec<scaleset::RunnerGroup>>(Value::Array(list));
        }

        /// The REST API's runners and downloads, with any JSON type in each field.
        #[test]
        fn rest_answers_with_any_field_types(
            runner in object_near(vec![
                ("id", u(any::<u64>())), ("name", s(".{0,8}")), ("status", s(select(vec!["online", "offline"]).prop_map(String::from))),
                ("busy", any::<bool>().prop_map(Value::from).boxed()),
                ("labels", prop::collection::vec(object_near(vec![("name", s(".{0,6}"))]), 0..3).prop_map(Value::Array).boxed()),
            ]),
            download in object_near(vec![("os", s(".{0,6}")), ("architecture", s(".{0,6}")), ("filename", s(".{0,20}"))]),
        ) {
            if let Ok(r) = serde_json::from_value::<sysrunner::github::Runner>(runner.clone()) {
                prop_assert_eq!(r.online(), runner["status"] == "online");
            }
            let _ = serde_json::from_value::<sysrunner::github::RunnerDownload>(download);
        }

        /// A JIT answer's token: `exp` of any JSON type, or any text: read or not, never a panic.
        #[test]
        fn jwt_exp_reads_any_token(
            exp in prop_oneof![
                any::<u64>().prop_map(Value::from),
                (0u64..=i64::MAX as u64).prop_map(Value::from),
                json_value(),
            ],
            text in any::<String>(),
        ) {
            let got = scaleset::jwt_exp(&jwt(&json!({"exp": exp.clone()})));
            match exp.as_u64() {
                Some(e) => prop_assert_eq!(got, UNIX_EPOCH.checked_add(Duration::from_secs(e))),
                None => prop_assert_eq!(got, None::<SystemTime>),
            }
            let _ = scaleset::jwt_exp(&text);
        }
    }

    /// Found by the property above over every u64: `jwt_exp` added `exp` to the epoch unchecked,
    /// and a token whose `exp` is past what the clock holds panicked. Fixed with
    /// `UNIX_EPOCH.checked_add` in src/scaleset/client.rs.
    #[test]
    fn jwt_exp_with_an_exp_past_the_clock_is_unknown() {
        assert_eq!(scaleset::jwt_exp(&jwt(&json!({"exp": u64::MAX}))), None);
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon.json sysrunner writes.

/// Every key the plan writes into daemon.json: each one dockerd knows (moby's
/// `daemon/config` names; `dockerd --validate` refuses any other).
const DAEMON_KEYS: &[&str] = &[
    "hosts",
    "group",
    "tls",
    "data-root",
    "pidfile",
    "storage-driver",
    "exec-opts",
    "features",
    "mtu",
    "default-network-opts",
    "containerd",
    "registry-mirrors",
    "proxies",
];

#[derive(Debug, Clone)]
struct PlanCase {
    runtime: Runtime,
    facts: Facts,
    mtu: String,
    mirrors: String,
    image_store: String,
    version: Option<Version>,
    detected_mtu: Option<u32>,
    proxy_env: BTreeMap<String, String>,
    containerd: Option<PathBuf>,
}

fn plan_case() -> impl Strategy<Value = PlanCase> {
    let runtime = select(vec![
        Runtime::Sysbox,
        Runtime::Userns,
        Runtime::Privileged,
        Runtime::Host,
        Runtime::Unsupported,
    ]);
    let data_root = prop_oneof![
        3 => Just("/var/lib/docker".to_string()),
        2 => mount_path(),
    ];
    let fstype = prop_oneof![
        Just(None),
        select(vec!["overlay", "ext4", "xfs", "btrfs", "tmpfs"]).prop_map(|s| Some(s.to_string())),
    ];
    let cgroup = (
        prop_oneof![
            Just(None),
            Just(Some(probe::CgroupVersion::V1)),
            Just(Some(probe::CgroupVersion::V2))
        ],
        prop_oneof![
            Just(Some("/".to_string())),
            Just(None),
            "/[a-z.]{0,8}".prop_map(Some)
        ],
        prop::collection::vec("[a-z_]{1,8}", 0..4),
    );
    let facts = (
        data_root,
        fstype,
        any::<bool>(),
        cgroup,
        prop::collection::vec("[a-z]{1,6}", 0..2),
    )
        .prop_map(
            |(path, fstype, dev_fuse, (version, cpath, controllers), tables)| {
                let mut f = Facts::default();
                f.data_root.path = path;
                f.data_root.fstype = fstype;
                f.dev_fuse = dev_fuse;
                f.cgroup.version = version;
                f.cgroup.path = cpath;
                f.cgroup.rw = true;
                f.cgroup.controllers = controllers;
                f.iptables_legacy_tables = tables;
                f
            },
        );
    let mtu = prop_oneof![
        4 => (68u32..=65535).prop_map(|m| m.to_string()),
        1 => Just("detect".to_string()),
        1 => number_like_mtu(),
    ];
    let mirrors = prop_oneof![
        2 => Just(String::new()),
        3 => prop::collection::vec(url_text(), 1..3).prop_map(|v| v.join(",")),
        1 => text_near(seeds(Kind::UrlList)),
    ];
    let proxy_env = prop::collection::btree_map(
        select(dplan::PROXY_VARS.to_vec()).prop_map(String::from),
        prop_oneof![Just("http://proxy.example:3128".to_string()), ".{0,12}"],
        0..3,
    );
    (
        runtime,
        facts,
        mtu,
        mirrors,
        select(vec!["graphdriver", "containerd"]).prop_map(String::from),
        prop_oneof![
            Just(None),
            (17u32..=30, 0u32..3).prop_map(|(major, minor)| Some(Version { major, minor }))
        ],
        prop_oneof![Just(None), (68u32..=65535).prop_map(Some)],
        proxy_env,
        prop_oneof![Just(None), Just(Some(PathBuf::from("/usr/bin/containerd")))],
    )
        .prop_map(
            |(
                runtime,
                facts,
                mtu,
                mirrors,
                image_store,
                version,
                detected_mtu,
                proxy_env,
                containerd,
            )| {
                PlanCase {
                    runtime,
                    facts,
                    mtu,
                    mirrors,
                    image_store,
                    version,
                    detected_mtu,
                    proxy_env,
                    containerd,
                }
            },
        )
}

fn number_like_mtu() -> BoxedStrategy<String> {
    text_near(vec![
        "1400".into(),
        "68".into(),
        "65535".into(),
        "detect".into(),
    ])
}

/// The plan's daemon.json for `case`, its settings read through the settings' own parsers; `None`
/// when those refuse them, or dockerd does not start there.
fn daemon_json(case: &PlanCase) -> Option<(Value, DockerSettings)> {
    let mut g = Given::default();
    g.flags.insert("DOCKER_MTU".into(), case.mtu.clone());
    g.flags
        .insert("DOCKER_IMAGE_STORE".into(), case.image_store.clone());
    if !case.mirrors.is_empty() {
        g.flags
            .insert("DOCKER_REGISTRY_MIRRORS".into(), case.mirrors.clone());
    }
    let docker = g.with(config::load_probe).ok()?.docker;
    let plan = dplan::plan(
        case.runtime,
        &case.facts,
        &PlanInput {
            docker: &docker,
            version: case.version,
            detected_mtu: case.detected_mtu,
            proxy_env: &case.proxy_env,
            containerd: case.containerd.clone(),
        },
    )?;
    Some((plan.daemon_json, docker))
}

/// The checks on a daemon.json that need no dockerd.
fn check_daemon_json(
    case: &PlanCase,
    v: &Value,
    docker: &DockerSettings,
) -> Result<(), TestCaseError> {
    let text = serde_json::to_string_pretty(v).unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    prop_assert_eq!(&back, v);
    let o = v.as_object().expect("daemon.json is an object");
    for k in o.keys() {
        prop_assert!(DAEMON_KEYS.contains(&k.as_str()), "unknown key {k}");
    }
    prop_assert_eq!(&o["data-root"], &json!(case.facts.data_root.path));
    let mtu = docker.mtu.or(case.detected_mtu);
    match mtu {
        Some(m) => {
            prop_assert_eq!(&o["mtu"], &json!(m));
            prop_assert!((68..=65535).contains(&m));
            if let Some(opts) = o.get("default-network-opts") {
                prop_assert_eq!(
                    &opts["bridge"]["com.docker.network.driver.mtu"],
                    &json!(m.to_string())
                );
            }
        }
        None => prop_assert!(!o.contains_key("mtu")),
    }
    for m in o
        .get("registry-mirrors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let m = m.as_str().expect("a mirror is a string");
        prop_assert!(
            go_would_take_mirror(m),
            "dockerd would refuse mirror {m:?} when it starts"
        );
    }
    for (_, p) in o
        .get("proxies")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        prop_assert!(p.is_string());
    }
    Ok(())
}

mod daemon {
    use super::*;

    proptest! {
        /// For any plan inputs (runtime, data root, MTU, mirrors, image store, dockerd version,
        /// proxies, containerd), daemon.json is JSON of only the keys dockerd knows, each of the
        /// type dockerd reads, saying the MTU and mirrors given.
        #[test]
        fn daemon_json_has_only_keys_dockerd_knows(case in plan_case()) {
            if let Some((v, docker)) = daemon_json(&case) {
                check_daemon_json(&case, &v, &docker)?;
            } else {
                let plain = PlanCase { mtu: "detect".into(), mirrors: String::new(), ..case.clone() };
                prop_assert!(!case.runtime.supported() || daemon_json(&plain).is_some());
            }
        }
    }

    /// How many generated configs `dockerd --validate` checks (SYSRUNNER_DOCKERD_CASES; default 24).
    fn dockerd_cases() -> u32 {
        std::env::var("SYSRUNNER_DOCKERD_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24)
    }

    const DOCKERD: &str = "/usr/sbin/dockerd";

    /// A sample of generated daemon.json files, as sysrunner writes them, pass
    /// `dockerd --validate` of the dockerd installed (Debian's 26 here). Skipped with a message
    /// where dockerd is missing; CI (CI=true) fails instead.
    #[test]
    fn daemon_json_samples_pass_dockerd_validate() {
        if !Path::new(DOCKERD).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{DOCKERD} is missing in CI: .ci/install-deps installs docker.io"
            );
            eprintln!("skipped: {DOCKERD} is missing, so no generated daemon.json was validated");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: dockerd_cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let file = dir.path().join("daemon.json");
        let result = runner.run(&plan_case(), |case| {
            let Some((v, _)) = daemon_json(&case) else {
                return Ok(());
            };
            std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
            let out = std::process::Command::new(DOCKERD)
                .arg("--validate")
                .arg("--config-file")
                .arg(&file)
                .output()
                .unwrap();
            prop_assert!(
                out.status.success(),
                "dockerd --validate refused {}: {}{}",
                serde_json::to_string_pretty(&v).unwrap(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
