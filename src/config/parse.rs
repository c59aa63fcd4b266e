//! Step one of settings, per value: the parser of each [`Kind`], typed ([`Parse`]: a marker type per
//! kind in [`kind`], whose `Value` is what a setting of that kind becomes). No value here knows
//! about another, and no parser reads anything but its text; the rules that span settings are
//! `resolve`'s.

use super::Scope;
use super::defs::Kind;
use crate::secret::Secret;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

/// Why a value was refused, and how to fix it. The caller adds the variable's name and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}; {fix}")]
pub struct Bad {
    pub what: String,
    pub fix: String,
}

fn bad(what: impl Into<String>, fix: impl Into<String>) -> Bad {
    Bad {
        what: what.into(),
        fix: fix.into(),
    }
}

pub const MAX_LABELS: usize = 100;
pub const MAX_LABEL_LEN: usize = 256;
pub const MAX_RUNNER_NAME: usize = 64;

/// One kind's parser: the [`Kind`] the settings table shows, and the type a value becomes.
pub trait Parse {
    const KIND: Kind;
    type Value: Clone;
    /// `name` is the setting's, for the rare message that suggests a value of it.
    fn parse(raw: &str, name: &str) -> Result<Self::Value, Bad>;
}

/// A setting that takes one of a few words: an enum whose words are listed once, with
/// `choice!` (in `config`), in the order `--help` shows them.
pub trait Choice: Copy + PartialEq + 'static {
    const WORDS: &'static [&'static str];
    /// The value of each word, in the order of [`Self::WORDS`].
    const VALUES: &'static [Self];

    fn word(self) -> &'static str {
        let i = Self::VALUES
            .iter()
            .position(|v| *v == self)
            .expect("every value has a word");
        Self::WORDS[i]
    }
}

/// The marker type of each [`Kind`], for the settings table's typed rows.
pub mod kind {
    use super::*;

    macro_rules! kinds {
        ($( $(#[$doc:meta])* $name:ident => $value:ty = $parse:expr; )*) => {
            $(
                $(#[$doc])*
                pub struct $name;

                impl Parse for $name {
                    const KIND: Kind = Kind::$name;
                    type Value = $value;
                    fn parse(raw: &str, name: &str) -> Result<$value, Bad> {
                        let parse: fn(&str, &str) -> Result<$value, Bad> = $parse;
                        parse(raw, name)
                    }
                }
            )*
        };
    }

    kinds! {
        Repo => Scope = |raw, _| repo(raw);
        Slug => String = |raw, _| slug(raw);
        Secret => crate::secret::Secret = |raw, _| token(raw);
        RsaKey => crate::secret::Secret = |raw, _| rsa_key(raw);
        JitConfig => crate::secret::Secret = |raw, _| jit_config(raw);
        /// The file's content is parsed as the secret it holds; the path itself only needs to
        /// exist, which reading it shows.
        SecretFile => PathBuf = |raw, _| Ok(PathBuf::from(raw));
        AppId => String = |raw, _| app_id(raw);
        Id => u64 = |raw, _| positive(raw);
        Url => String = |raw, _| url(raw);
        UrlList => Vec<String> = |raw, _| list(raw, "URL")?.iter().map(|u| url(u)).collect();
        RunnerName => String = |raw, _| runner_name(raw);
        Labels => Vec<String> = |raw, _| labels(raw);
        RunnerGroup => String = |raw, _| group(raw);
        Bool => bool = |raw, _| boolean(raw);
        AbsPath => PathBuf = |raw, _| abs_path(raw).map(PathBuf::from);
        AbsPathList => Vec<PathBuf> = |raw, _| list(raw, "path")?
            .iter()
            .map(|p| abs_path(p).map(PathBuf::from))
            .collect();
        WorkPath => String = |raw, _| work_path(raw);
        UserName => String = |raw, _| user_name(raw);
        /// `None` is `detect`.
        Mtu => Option<u32> = |raw, _| mtu(raw);
        Duration => std::time::Duration = |raw, _| duration(raw);
        LogLevel => String = log_level;
        Count => u32 = |raw, _| count(raw);
        Bytes => u64 = |raw, _| bytes(raw);
        /// In billionths of a CPU, as Docker's `NanoCpus`.
        Cpus => u64 = |raw, _| nano_cpus(raw);
        Listen => std::net::SocketAddr = |raw, _| listen(raw);
        Image => String = |raw, _| image(raw);
    }

    /// One of the words of `E`.
    pub struct Choice<E>(PhantomData<E>);

    impl<E: super::Choice> Parse for Choice<E> {
        const KIND: Kind = Kind::Choice(E::WORDS);
        type Value = E;
        fn parse(raw: &str, _: &str) -> Result<E, Bad> {
            let lower = raw.to_ascii_lowercase();
            match E::WORDS.iter().position(|w| *w == lower) {
                Some(i) => Ok(E::VALUES[i]),
                None => Err(bad(
                    format!("is not one of {}", E::WORDS.join(", ")),
                    format!("use {}", E::WORDS.join(" or ")),
                )),
            }
        }
    }
}

/// A whole number written in digits alone: Rust's `parse` also takes a leading `+`, which no
/// setting documents.
fn whole<T: std::str::FromStr>(raw: &str) -> Option<T> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

fn is_login_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn repo(raw: &str) -> Result<Scope, Bad> {
    if raw.contains("://") || raw.starts_with("github.com/") {
        return Err(bad(
            "is a URL, not owner/repo",
            "set REPO to the repository's owner and name, e.g. REPO=octo-org/octo-repo, and GITHUB_URL=https://HOST for GitHub Enterprise Server",
        ));
    }
    let fix = "set REPO to the repository's owner and name, e.g. REPO=octo-org/octo-repo";
    let Some((owner, name)) = raw.split_once('/') else {
        return Err(bad("is not of the form owner/repo", fix));
    };
    let owner_ok = !owner.is_empty()
        && owner.len() <= 39
        && !owner.starts_with('-')
        && owner.chars().all(is_login_char);
    let name_ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !owner_ok || !name_ok {
        return Err(bad(
            "is not of the form owner/repo (owner: letters, digits, -, _; repo: letters, digits, -, _, .)",
            fix,
        ));
    }
    Ok(Scope::Repo {
        owner: owner.into(),
        repo: name.into(),
    })
}

fn slug(raw: &str) -> Result<String, Bad> {
    if raw.contains('/') {
        return Err(bad(
            "contains '/': an organization or enterprise is one name",
            "for a repository set REPO=owner/repo instead",
        ));
    }
    if raw.len() > 100 || raw.starts_with('-') || !raw.chars().all(is_login_char) {
        return Err(bad(
            "is not a valid name (letters, digits, -, _)",
            "use the name as it appears in the URL, e.g. https://github.com/octo-org -> octo-org",
        ));
    }
    Ok(raw.to_string())
}

fn token(raw: &str) -> Result<Secret, Bad> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(bad("is empty", "put the token in the variable or the file"));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "contains white space or control characters inside the token",
            "a token is one word: check for a pasted line break or a second value",
        ));
    }
    Ok(Secret::new(t))
}

/// Accepts a PEM RSA key (PKCS#1 as GitHub hands out, or PKCS#8) and proves it by signing: a key
/// that only looks like PEM would otherwise fail at the first API call, after dockerd started.
fn rsa_key(raw: &str) -> Result<Secret, Bad> {
    // One-line keys in `.env` files carry `\n` escapes instead of line breaks.
    let pem = if !raw.contains('\n') && raw.contains("\\n") {
        raw.replace("\\n", "\n")
    } else {
        raw.to_string()
    };
    let pem = pem.trim().to_string();
    let fix = "use the .pem file GitHub generated for the App (-----BEGIN RSA PRIVATE KEY-----)";
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|_| bad("is not a PEM RSA private key", fix))?;
    let claims = serde_json::json!({"iat": 0, "exp": 1, "iss": "check"});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|_| bad("is PEM but not a usable RSA private key", fix))?;
    Ok(Secret::new(pem))
}

/// A JIT config is base64 of a JSON object holding `.runner`; anything else would only fail inside
/// the runner, with a less helpful message.
fn jit_config(raw: &str) -> Result<Secret, Bad> {
    use base64::Engine;
    let fix = "pass the encoded_jit_config GitHub returned, unchanged";
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| bad("is not base64", fix))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("does not decode to JSON", fix))?;
    if doc.get(".runner").and_then(|v| v.as_str()).is_none() {
        return Err(bad("decodes to JSON without a \".runner\" entry", fix));
    }
    Ok(Secret::new(raw.trim()))
}

/// The runner name a JIT config carries (`agentName` in its `.runner` document, itself base64 of
/// JSON, as actions/runner writes the `.runner` file), if it says one.
pub fn jit_agent_name(encoded: &str) -> Option<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let doc: serde_json::Value = serde_json::from_slice(&b64.decode(encoded.trim()).ok()?).ok()?;
    let runner = b64.decode(doc.get(".runner")?.as_str()?).ok()?;
    let runner: serde_json::Value =
        serde_json::from_slice(runner.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&runner)).ok()?;
    let name = runner.get("agentName")?.as_str()?;
    (!name.is_empty()).then(|| name.to_string())
}

fn app_id(raw: &str) -> Result<String, Bad> {
    let numeric = !raw.is_empty() && raw.chars().all(|c| c.is_ascii_digit()) && raw.len() <= 19;
    let numeric = numeric && raw.parse::<u64>().is_ok_and(|n| n > 0);
    let client_id = raw.len() > 2
        && raw.len() <= 40
        && raw.starts_with("Iv")
        && raw[2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
    if numeric || client_id {
        Ok(raw.to_string())
    } else {
        Err(bad(
            "is neither an App id (a number) nor a client id (Iv…)",
            "copy App ID or Client ID from the App's settings page",
        ))
    }
}

fn positive(raw: &str) -> Result<u64, Bad> {
    match whole::<u64>(raw) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(bad(
            "is not a positive integer",
            "use the number from the installation's URL (…/settings/installations/NUMBER)",
        )),
    }
}

fn url(raw: &str) -> Result<String, Bad> {
    let fix = "give an absolute URL such as https://github.com or https://ghes.example.com";
    let raw = raw.trim();
    // The URL parser drops tabs and line breaks anywhere: the text would not be the URL checked.
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains white space or control characters", fix));
    }
    let u = url::Url::parse(raw).map_err(|e| bad(format!("is not an absolute URL ({e})"), fix))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(bad("is not an http(s) URL with a host", fix));
    }
    // A password needs no user name (`http://:secret@host`): credentials either way, which
    // dockerd refuses in a mirror and which must not reach a log.
    if u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err(bad(
            "has a query, fragment, user name or password",
            "give only scheme, host and path",
        ));
    }
    // The URL as parsed, not as written: `https:host` and `https:\\host` read as `https://host`
    // here, while Go's parser (dockerd's, for DOCKER_REGISTRY_MIRRORS) refuses them.
    Ok(u.as_str().trim_end_matches('/').to_string())
}

fn list(raw: &str, what: &str) -> Result<Vec<String>, Bad> {
    raw.split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                Err(bad(
                    format!("has an empty {what} (two commas, or a comma at an end)"),
                    "separate entries with single commas",
                ))
            } else {
                Ok(item.to_string())
            }
        })
        .collect()
}

fn runner_name(raw: &str) -> Result<String, Bad> {
    let ok = raw.len() <= MAX_RUNNER_NAME
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(bad(
            format!(
                "is not a runner name (at most {MAX_RUNNER_NAME} letters, digits, '.', '_', '-')"
            ),
            "choose a shorter name of those characters",
        ))
    }
}

fn labels(raw: &str) -> Result<Vec<String>, Bad> {
    let labels = list(raw, "label")?;
    if labels.len() > MAX_LABELS {
        return Err(bad(
            format!(
                "has {} labels; GitHub takes at most {MAX_LABELS}",
                labels.len()
            ),
            "drop some labels",
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        if l.chars().count() > MAX_LABEL_LEN {
            return Err(bad(
                format!("has a label longer than {MAX_LABEL_LEN} characters"),
                "shorten it",
            ));
        }
        if l.starts_with('-') {
            return Err(bad(
                format!("has label {l:?}, which starts with '-'"),
                "labels cannot start with '-'",
            ));
        }
        if l.chars().any(char::is_control) {
            return Err(bad(
                format!("has label {l:?} with a control character"),
                "remove it",
            ));
        }
        if let Some(first) = labels[..i].iter().find(|o| o.eq_ignore_ascii_case(l)) {
            return Err(bad(
                format!("lists {first:?} and {l:?}: labels are unique ignoring case"),
                "list each label once",
            ));
        }
    }
    Ok(labels)
}

fn group(raw: &str) -> Result<String, Bad> {
    if raw.chars().count() > 100 || raw.chars().any(char::is_control) {
        return Err(bad(
            "is not a runner group name",
            "use the group's name as shown in the settings",
        ));
    }
    Ok(raw.to_string())
}

pub fn boolean(raw: &str) -> Result<bool, Bad> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(
            "is not a boolean",
            "use true or false (also 1/0, yes/no)",
        )),
    }
}

fn abs_path(raw: &str) -> Result<String, Bad> {
    if raw.starts_with('/') && !raw.split('/').any(|c| c == "..") {
        Ok(raw.trim_end_matches('/').to_string().max("/".to_string()))
    } else {
        Err(bad(
            "is not an absolute path without '..'",
            "give a path starting with /",
        ))
    }
}

fn work_path(raw: &str) -> Result<String, Bad> {
    if raw.split('/').any(|c| c == "..") || raw.chars().any(char::is_control) {
        Err(bad(
            "contains '..' or control characters",
            "give a plain path such as _work or /work",
        ))
    } else {
        Ok(raw.to_string())
    }
}

fn user_name(raw: &str) -> Result<String, Bad> {
    if raw == "root" {
        return Err(bad(
            "is root: jobs never run as root",
            "use the image's unprivileged user, e.g. RUNNER_USER=runner",
        ));
    }
    let mut chars = raw.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if first_ok && rest_ok && raw.len() <= 32 {
        Ok(raw.to_string())
    } else {
        Err(bad(
            "is not a user name (a lowercase letter or _, then lowercase letters, digits, _ or -)",
            "use a user that exists in the image",
        ))
    }
}

fn mtu(raw: &str) -> Result<Option<u32>, Bad> {
    if raw.eq_ignore_ascii_case("detect") {
        return Ok(None);
    }
    match whole::<u32>(raw) {
        Some(n) if (68..=65535).contains(&n) => Ok(Some(n)),
        _ => Err(bad(
            "is not an MTU",
            "use detect, or a number of bytes from 68 to 65535 (e.g. 1400)",
        )),
    }
}

/// The one duration syntax: a whole number, optionally followed by `s`, `m` or `h`; seconds by
/// default.
pub fn duration(raw: &str) -> Result<Duration, Bad> {
    let fix = "write a whole number with an optional unit: 500ms, 90, 90s, 5m or 1h";
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, ""),
    };
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad("is not a duration", fix)),
    };
    let n: u64 = digits.parse().map_err(|_| bad("is not a duration", fix))?;
    n.checked_mul(millis)
        .filter(|ms| *ms <= 7 * 24 * 3_600_000)
        .map(Duration::from_millis)
        .ok_or_else(|| bad("is longer than a week", fix))
}

/// A whole number from 0 to 4 194 304 (the kernel's largest pid_max).
pub fn count(raw: &str) -> Result<u32, Bad> {
    whole::<u32>(raw).filter(|n| *n <= 1 << 22).ok_or_else(|| {
        bad(
            "is not a whole number up to 4194304",
            "write a whole number such as 8 or 4096",
        )
    })
}

/// Bytes: a whole number with an optional binary `k`, `m` or `g` (either case, `b` allowed
/// after it), as `docker run --memory` takes it; at least 6 MiB, Docker's own minimum.
pub fn bytes(raw: &str) -> Result<u64, Bad> {
    let fix = "write a size such as 512m or 4g";
    let lower = raw.to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, scale) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1u64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower, 1),
    };
    let n: u64 = whole(digits).ok_or_else(|| bad("is not a size", fix))?;
    let b = n
        .checked_mul(scale)
        .ok_or_else(|| bad("is too large", fix))?;
    if b < 6 << 20 {
        return Err(bad("is under 6m, Docker's smallest memory limit", fix));
    }
    Ok(b)
}

/// CPUs as a decimal (`2`, `1.5`, `0.25`), in billionths; more than 0.
pub fn nano_cpus(raw: &str) -> Result<u64, Bad> {
    let fix = "write a number of CPUs such as 2 or 1.5";
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return Err(bad("is not a number of CPUs", fix));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| bad("is not a number of CPUs", fix))?
    };
    let frac: u64 = format!("{frac:0<9}").parse().unwrap_or(0);
    let nano = whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(frac))
        .filter(|n| *n > 0)
        .ok_or_else(|| bad("is not a number of CPUs above 0", fix))?;
    Ok(nano)
}

/// `HOST:PORT` (`127.0.0.1:9090`, `[::]:9090`), or a bare port for every IPv4 address.
pub fn listen(raw: &str) -> Result<std::net::SocketAddr, Bad> {
    let fix = "write an address and port such as 0.0.0.0:9090, or a port";
    if let Some(port) = whole::<u16>(raw) {
        return Ok(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    }
    raw.parse()
        .map_err(|_| bad("is not an address and port", fix))
}

/// A Docker image reference: `name[:tag][@digest]`, lowercase name, no spaces.
pub fn image(raw: &str) -> Result<String, Bad> {
    let fix = "write an image reference such as ghcr.io/sysrunner/sysrunner:0.1.0";
    let (name, digest) = match raw.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (raw, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && hex.len() >= 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if !ok {
            return Err(bad("has a digest that is not `algorithm:hex`", fix));
        }
    }
    let path = match name.rsplit_once(':') {
        // A colon after the last slash starts a tag; before it, a registry's port.
        Some((p, tag)) if !tag.contains('/') => {
            let tag_ok = tag.len() <= 128
                && tag
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !tag_ok {
                return Err(bad(
                    "has a tag that is not letters, digits, `.` `_` `-`",
                    fix,
                ));
            }
            p
        }
        _ => name,
    };
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c);
    if path.is_empty() || !path.chars().all(ok_char) || path.starts_with('/') || path.ends_with('/')
    {
        return Err(bad(
            "is not an image reference (lowercase letters, digits, `.` `_` `-` `/`, then `:tag`)",
            fix,
        ));
    }
    Ok(raw.to_string())
}

fn log_level(raw: &str, name: &str) -> Result<String, Bad> {
    // Each directive trimmed: tracing-subscriber (0.3.23) reads a directive's characters after
    // trimming it but cuts the untrimmed text at their places, so ` sysrunner=debug` meant target
    // ` ` and a space before a character of several bytes panicked.
    let filter = raw.split(',').map(str::trim).collect::<Vec<_>>().join(",");
    tracing_subscriber::EnvFilter::builder()
        .parse(&filter)
        .map(|_| filter.clone())
        .map_err(|e| {
            bad(
                format!("is not a log filter ({e})"),
                format!("use error, warn, info, debug or trace, e.g. {name}=debug"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    fn ok<K: Parse>(raw: &str) -> K::Value
    where
        K::Value: std::fmt::Debug,
    {
        K::parse(raw, "X").unwrap_or_else(|b| panic!("{raw:?} refused: {b:?}"))
    }
    fn refused<K: Parse>(raw: &str) -> Bad
    where
        K::Value: std::fmt::Debug,
    {
        match K::parse(raw, "X") {
            Err(b) => b,
            Ok(v) => panic!("{raw:?} accepted as {v:?}"),
        }
    }

    #[test]
    fn repo_accepts_owner_slash_name() {
        for r in ["octo-org/octo-repo", "a/b", "me_acme/repo.js", "O/.github"] {
            ok::<kind::Repo>(r);
        }
    }

    #[test]
    fn repo_refuses_other_forms() {
        for r in ["octo", "a/b/c", "/b", "a/", "-a/b", "a/..", "a b/c"] {
            refused::<kind::Repo>(r);
        }
        assert!(
            refused::<kind::Repo>("https://github.com/a/b")
                .what
                .contains("URL")
        );
    }

    #[test]
    fn slug_refuses_slash_and_odd_characters() {
        ok::<kind::Slug>("octo-org");
        assert!(refused::<kind::Slug>("octo/repo").fix.contains("REPO"));
        refused::<kind::Slug>("octo org");
        refused::<kind::Slug>("-octo");
    }

    #[test]
    fn booleans_are_exactly_six_words_any_case() {
        for (raw, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("NO", false),
        ] {
            assert_eq!(ok::<kind::Bool>(raw), want, "{raw}");
        }
        for raw in ["on", "off", "y", "n", "2", "truee", " true"] {
            refused::<kind::Bool>(raw);
        }
    }

    #[test]
    fn durations_take_seconds_minutes_hours() {
        for (raw, secs) in [
            ("90", 90),
            ("90s", 90),
            ("5m", 300),
            ("1h", 3600),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(duration(raw).unwrap(), Duration::from_secs(secs), "{raw}");
        }
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("1500ms").unwrap(), Duration::from_millis(1500));
        for raw in [
            "",
            "s",
            "5 m",
            "1.5m",
            "-1",
            "5d",
            "1m30s",
            "10 ms",
            "1.5s",
            "99999999999999999999",
        ] {
            assert!(duration(raw).is_err(), "{raw} accepted");
        }
        assert!(duration("200h").unwrap_err().what.contains("week"));
    }

    #[test]
    fn labels_are_trimmed_and_checked() {
        assert_eq!(
            ok::<kind::Labels>(" gpu , linux-big,x"),
            ["gpu", "linux-big", "x"]
        );
        assert!(refused::<kind::Labels>("a,,b").what.contains("empty"));
        assert!(refused::<kind::Labels>("a,").what.contains("empty"));
        assert!(refused::<kind::Labels>("gpu,GPU").what.contains("unique"));
        assert!(refused::<kind::Labels>("-x").what.contains("'-'"));
        let long = "x".repeat(257);
        assert!(refused::<kind::Labels>(&long).what.contains("256"));
        ok::<kind::Labels>(&"y".repeat(256));
        let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
        assert!(
            refused::<kind::Labels>(&many.join(","))
                .what
                .contains("101")
        );
        ok::<kind::Labels>(&many[..100].join(","));
    }

    #[test]
    fn app_id_is_a_number_or_a_client_id() {
        ok::<kind::AppId>("123456");
        ok::<kind::AppId>("Iv1.0123456789abcdef");
        ok::<kind::AppId>("Iv23liAbCdEf");
        for raw in ["0", "abc", "Iv", "12a", "Iv1 x", "-5"] {
            refused::<kind::AppId>(raw);
        }
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert_eq!(
            ok::<kind::Url>("https://ghes.example.com/"),
            "https://ghes.example.com"
        );
        ok::<kind::Url>("http://127.0.0.1:8080");
        for raw in [
            "github.com",
            "ftp://x",
            "https://",
            "https://x?y=1",
            "/relative",
        ] {
            refused::<kind::Url>(raw);
        }
        assert_eq!(
            ok::<kind::UrlList>("https://m1.example, http://m2.example:5000").len(),
            2
        );
        refused::<kind::UrlList>("https://m1.example,mirror");
    }

    #[test]
    fn mtu_is_detect_or_a_size() {
        assert_eq!(ok::<kind::Mtu>("detect"), None);
        assert_eq!(ok::<kind::Mtu>("1400"), Some(1400));
        for raw in ["0", "67", "65536", "auto", "1400b"] {
            refused::<kind::Mtu>(raw);
        }
    }

    #[test]
    fn user_name_is_never_root() {
        ok::<kind::UserName>("runner");
        assert!(refused::<kind::UserName>("root").what.contains("root"));
        refused::<kind::UserName>("Runner");
        refused::<kind::UserName>("1runner");
    }

    #[test]
    fn runner_names_fit_github() {
        ok::<kind::RunnerName>("sysrunner-3f2a9c1d7e0b");
        refused::<kind::RunnerName>(&"n".repeat(65));
        refused::<kind::RunnerName>("my runner");
        refused::<kind::RunnerName>("a/b");
    }

    #[test]
    fn paths() {
        ok::<kind::AbsPath>("/opt/actions-runner");
        refused::<kind::AbsPath>("opt/actions-runner");
        refused::<kind::AbsPath>("/opt/../etc");
        ok::<kind::WorkPath>("_work");
        ok::<kind::WorkPath>("/work");
        refused::<kind::WorkPath>("../work");
    }

    #[test]
    fn choices_ignore_case() {
        assert_eq!(ok::<kind::Choice<Mode>>("JIT"), Mode::Jit);
        refused::<kind::Choice<Mode>>("jitconfig");
    }

    #[test]
    fn tokens_are_one_word() {
        assert_eq!(ok::<kind::Secret>("ghp_abc\n").expose(), "ghp_abc");
        refused::<kind::Secret>("ghp_a bc");
        refused::<kind::Secret>("  ");
    }

    #[test]
    fn log_level_takes_tracing_filters() {
        ok::<kind::LogLevel>("debug");
        ok::<kind::LogLevel>("sysrunner=debug,dockerd=warn");
        refused::<kind::LogLevel>("loud=[");
    }

    /// Found by tests/parsers_fuzz.rs: LOG_LEVEL=" 𠀀[" panicked inside tracing-subscriber, which
    /// cuts an untrimmed directive at the places of the trimmed one's characters; with ASCII
    /// alone, `a=debug, b=warn` silently meant target ` ` for its second directive.
    #[test]
    fn log_level_directives_are_trimmed_before_tracing_reads_them() {
        refused::<kind::LogLevel>(" \u{20000}[");
        ok::<kind::LogLevel>(" \u{20000}=debug");
        assert_eq!(
            ok::<kind::LogLevel>("sysrunner=debug, dockerd=warn "),
            "sysrunner=debug,dockerd=warn"
        );
        assert_eq!(ok::<kind::LogLevel>(" debug"), "debug");
    }

    #[test]
    fn a_jit_config_names_its_runner() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let runner = b64(r#"{"agentId":7,"agentName":"ci-host1-0000002a","poolId":1}"#);
        let jit = b64(&format!(
            r#"{{".runner":"{runner}",".credentials":"e30="}}"#
        ));
        assert_eq!(jit_agent_name(&jit).as_deref(), Some("ci-host1-0000002a"));
        assert_eq!(jit_agent_name(&b64(r#"{".runner":"e30="}"#)), None);
        assert_eq!(jit_agent_name("not base64!"), None);
    }

    #[test]
    fn jit_config_must_decode_to_the_runner_triple() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let good =
            b64(r#"{".runner":"e30=",".credentials":"e30=",".credentials_rsaparams":"e30="}"#);
        ok::<kind::JitConfig>(&good);
        refused::<kind::JitConfig>("not base64!");
        refused::<kind::JitConfig>(&b64("not json"));
        refused::<kind::JitConfig>(&b64(r#"{"runner":"x"}"#));
    }

    #[test]
    fn counts_are_whole_numbers_up_to_ten_thousand() {
        assert_eq!(ok::<kind::Count>("0"), 0);
        assert_eq!(ok::<kind::Count>("8"), 8);
        assert_eq!(ok::<kind::Count>("32768"), 32768);
        for r in ["-1", "1.5", "", "4194305", "four"] {
            refused::<kind::Count>(r);
        }
    }

    #[test]
    fn bytes_take_binary_units_and_docker_minimum() {
        assert_eq!(ok::<kind::Bytes>("512m"), 512 << 20);
        assert_eq!(ok::<kind::Bytes>("4G"), 4 << 30);
        assert_eq!(ok::<kind::Bytes>("2gb"), 2 << 30);
        assert_eq!(ok::<kind::Bytes>("8192k"), 8 << 20);
        assert_eq!(ok::<kind::Bytes>("6291456"), 6 << 20);
        assert!(refused::<kind::Bytes>("4m").what.contains("6m"));
        for r in ["", "g", "1.5g", "4t", "-1g", "99999999999999999999g"] {
            refused::<kind::Bytes>(r);
        }
    }

    #[test]
    fn cpus_are_decimals_in_billionths() {
        assert_eq!(ok::<kind::Cpus>("2"), 2_000_000_000);
        assert_eq!(ok::<kind::Cpus>("1.5"), 1_500_000_000);
        assert_eq!(ok::<kind::Cpus>(".25"), 250_000_000);
        assert_eq!(ok::<kind::Cpus>("0.000000001"), 1);
        for r in ["0", "0.0", "", ".", "1.2.3", "-1", "1e3", "0.0000000001"] {
            refused::<kind::Cpus>(r);
        }
    }

    #[test]
    fn listen_takes_an_address_and_port_or_a_port() {
        assert_eq!(ok::<kind::Listen>("9090").to_string(), "0.0.0.0:9090");
        assert_eq!(
            ok::<kind::Listen>("127.0.0.1:9102").to_string(),
            "127.0.0.1:9102"
        );
        assert_eq!(ok::<kind::Listen>("[::]:9090").to_string(), "[::]:9090");
        for r in ["localhost:9090", ":9090", "99999", "1.2.3.4"] {
            refused::<kind::Listen>(r);
        }
    }

    /// Found by tests/parsers_fuzz.rs: the whole-number kinds took a leading `+` (Rust's `parse`
    /// does), which no setting documents and `duration` and `nano_cpus` refused.
    /// The 10-minute `daemon_json_has_only_keys_dockerd_knows` run's find (FUZZ.md): a URL with a
    /// password and no user name passed, and went into daemon.json as a mirror dockerd refuses.
    #[test]
    fn a_url_with_a_password_and_no_user_name_is_refused() {
        refused::<kind::UrlList>("https://m1.example, http:/:m@2.example:5000");
        refused::<kind::UrlList>("http://:secret@m2.example:5000");
        refused::<kind::Url>("https://:token@ghes.example.com");
    }

    #[test]
    fn whole_numbers_take_no_sign() {
        refused::<kind::Count>("+5");
        refused::<kind::Id>("+5");
        refused::<kind::Mtu>("+1400");
        refused::<kind::Bytes>("+512m");
        refused::<kind::Listen>("+9090");
        assert_eq!(ok::<kind::Count>("0005"), 5);
        assert_eq!(ok::<kind::Mtu>("01400"), Some(1400));
    }

    /// Found by tests/parsers_fuzz.rs: a URL was kept as written, while the URL parser that
    /// checked it reads `https:host` as `https://host` and drops tabs and line breaks; dockerd
    /// (Go's parser) refuses such a registry mirror when it starts, after the settings said yes.
    #[test]
    fn urls_are_kept_as_parsed_without_white_space() {
        assert_eq!(
            ok::<kind::Url>("https:mirror.example"),
            "https://mirror.example"
        );
        assert_eq!(ok::<kind::Url>("HTTPS://GitHub.com/"), "https://github.com");
        assert_eq!(
            ok::<kind::UrlList>("https:\\\\m1.example/v2/"),
            ["https://m1.example/v2"]
        );
        assert_eq!(
            ok::<kind::Url>(" https://github.com\n"),
            "https://github.com"
        );
        for raw in [
            "https://mir\tror.example",
            "https://mirror.example/a b",
            "https://mirror\n.example",
        ] {
            assert!(
                refused::<kind::Url>(raw).what.contains("white space"),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn images_are_references() {
        for r in [
            "ghcr.io/sysrunner/sysrunner:0.1.0",
            "sysrunner",
            "localhost:5000/a/b:tag",
            "sysrunner@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "registry.example:443/x",
        ] {
            ok::<kind::Image>(r);
        }
        for r in [
            "",
            "Sysrunner",
            "a b",
            "x:",
            "/x",
            "x/",
            "x@",
            "x@sha256:zz",
            "x:-t",
            "x:t!",
        ] {
            refused::<kind::Image>(r);
        }
    }
}
