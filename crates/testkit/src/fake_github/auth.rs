//! Who is calling and what they may do: the `Authorization` header read as a PAT, an App JWT or an
//! installation token, the JWT rules GitHub enforces, and the permission each scope needs.
//! Answers are GitHub's words; the REST module decides when to ask.

use super::config::AppConfig;
use super::state::{ScopeKey, State};
use jsonwebtoken::{Algorithm, Validation};

/// The credential a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cred {
    None,
    /// Index into `cfg.pats`.
    Pat(usize),
    /// Looks like a JWT (three dot-separated parts); not verified yet.
    Jwt(String),
    /// An installation token the fake issued (possibly expired).
    Installation(String),
    /// Anything else: an unknown token or an unknown scheme.
    Unknown,
}

impl Cred {
    /// How the request log shows the header: scheme and kind, never the value.
    pub(crate) fn redacted(&self, header: Option<&str>) -> Option<String> {
        let header = header?;
        let scheme = header.split_whitespace().next().unwrap_or("");
        let kind = match self {
            Cred::None => "none",
            Cred::Pat(_) => "pat",
            Cred::Jwt(_) => "jwt",
            Cred::Installation(_) => "installation-token",
            Cred::Unknown => "unknown",
        };
        Some(format!("{scheme} <{kind}>"))
    }
}

/// `Bearer X` and `token X` (any case) are GitHub's two accepted forms.
pub(crate) fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, value) = header?.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| value.trim())
        .filter(|v| !v.is_empty())
}

pub(crate) fn classify(st: &State, header: Option<&str>) -> Cred {
    let Some(h) = header else {
        return Cred::None;
    };
    let Some(token) = bearer(Some(h)) else {
        return Cred::Unknown;
    };
    if let Some(i) = st.cfg.pats.iter().position(|p| p.token == token) {
        return Cred::Pat(i);
    }
    if st.installation_tokens.contains_key(token) {
        return Cred::Installation(token.to_string());
    }
    if token.split('.').count() == 3 && token.starts_with("eyJ") {
        return Cred::Jwt(token.to_string());
    }
    Cred::Unknown
}

/// GitHub's checks on an App JWT: RS256 signature by the App's key, `iss` the App id (number or
/// string) or its client id, `iat` not in the future (60 s of drift allowed), `exp` in the future
/// and less than 10 minutes ahead of the fake's clock (GitHub: "no more than 10 minutes into the
/// future"; a client with `iat = now - 60` may sign `exp = now + 540`). The error is GitHub's message for a 401.
pub(crate) fn verify_jwt(st: &State, token: &str) -> Result<(), String> {
    const UNDECODABLE: &str = "A JSON web token could not be decoded";
    let (Some(app), Some(key)) = (st.cfg.app.as_ref(), st.app_key.as_ref()) else {
        return Err(UNDECODABLE.into());
    };
    let mut v = Validation::new(Algorithm::RS256);
    // The claim rules below are GitHub's, not the library's defaults (which allow 60 s leeway
    // on `exp` and know nothing of the 10-minute cap).
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, key, &v)
        .map_err(|_| UNDECODABLE.to_string())?
        .claims;
    let now = st.now();
    let iat = claims["iat"]
        .as_i64()
        .ok_or("Missing 'issued at' claim ('iat') in the JWT")?;
    let exp = claims["exp"]
        .as_i64()
        .ok_or("Missing 'expiration time' claim ('exp') in the JWT")?;
    if !issuer_matches(app, &claims["iss"]) {
        return Err("'Issuer' claim ('iss') must be the App's id or client id".into());
    }
    if iat > now + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past".into(),
        );
    }
    if exp <= now {
        return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".into());
    }
    if exp >= now + 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    Ok(())
}

fn issuer_matches(app: &AppConfig, iss: &serde_json::Value) -> bool {
    match iss {
        serde_json::Value::Number(n) => n.as_u64() == Some(app.id),
        serde_json::Value::String(s) => *s == app.id.to_string() || *s == app.client_id,
        _ => false,
    }
}

/// Read (GET) or change (anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Why a token may not act on a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// 403 with this message (and, for PATs, the scopes GitHub would accept).
    Forbidden {
        message: String,
        accepted_scopes: Option<&'static str>,
    },
    /// 404: GitHub hides what an installation cannot see.
    Hidden,
}

/// The classic scopes that may manage runners of a scope, and the fine-grained permission named
/// in the 403 message.
fn pat_needs(scope: &ScopeKey) -> (&'static [&'static str], &'static str, &'static str) {
    match scope {
        ScopeKey::Repo { .. } => (
            &["repo"],
            "repo",
            "\"Administration\" repository permission (write)",
        ),
        ScopeKey::Org(_) => (
            &["admin:org", "manage_runners:org"],
            "admin:org, manage_runners:org",
            "\"Self-hosted runners\" organization permission (write)",
        ),
        ScopeKey::Ent(_) => (
            &["manage_runners:enterprise", "admin:enterprise"],
            "manage_runners:enterprise, admin:enterprise",
            "classic scope manage_runners:enterprise",
        ),
    }
}

pub(crate) fn pat_allows(scopes: &[String], scope: &ScopeKey) -> Result<(), Denied> {
    let (accepted, header, fine) = pat_needs(scope);
    if scopes.iter().any(|s| accepted.contains(&s.as_str())) {
        return Ok(());
    }
    Err(Denied::Forbidden {
        message: format!(
            "Resource not accessible by personal access token: managing runners of {scope} needs the {} scope (classic) or the {fine}",
            accepted.join(" or ")
        ),
        accepted_scopes: Some(header),
    })
}

/// An installation token on a scope: the installation must cover it, with the runner permission.
/// Enterprise runners cannot be managed by Apps at all.
pub(crate) fn installation_allows(
    st: &State,
    token: &str,
    scope: &ScopeKey,
    access: Access,
) -> Result<(), Denied> {
    let Some(tok) = st.installation_tokens.get(token) else {
        return Err(Denied::Hidden);
    };
    let Some(inst) = st.installation(tok.installation_id) else {
        return Err(Denied::Hidden);
    };
    let permission = match scope {
        ScopeKey::Ent(_) => {
            return Err(Denied::Forbidden {
                message: "Resource not accessible by integration: GitHub Apps cannot manage enterprise self-hosted runners (use a classic PAT with manage_runners:enterprise)".into(),
                accepted_scopes: None,
            });
        }
        ScopeKey::Repo { owner, repo } => {
            let covered = inst.account.eq_ignore_ascii_case(owner)
                && (inst.repository_selection == "all"
                    || inst
                        .repositories
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(repo)))
                && tok
                    .repositories
                    .as_ref()
                    .is_none_or(|rs| rs.iter().any(|r| r.eq_ignore_ascii_case(repo)));
            if !covered {
                return Err(Denied::Hidden);
            }
            "administration"
        }
        ScopeKey::Org(o) => {
            if !(inst.account.eq_ignore_ascii_case(o) && inst.target_type == "Organization") {
                return Err(Denied::Hidden);
            }
            "organization_self_hosted_runners"
        }
    };
    let level = tok.permissions.get(permission).map(String::as_str);
    let ok = match access {
        Access::Read => matches!(level, Some("read" | "write")),
        Access::Write => level == Some("write"),
    };
    if ok {
        Ok(())
    } else {
        let want = if access == Access::Read {
            "read"
        } else {
            "write"
        };
        Err(Denied::Forbidden {
            message: format!(
                "Resource not accessible by integration: this needs the `{permission}` permission ({want})"
            ),
            accepted_scopes: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_github::config::FakeConfig;

    #[test]
    fn bearer_and_token_schemes_are_read() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("token abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
    }

    #[test]
    fn pat_scopes_per_scope_kind() {
        let repo = ScopeKey::Repo {
            owner: "o".into(),
            repo: "r".into(),
        };
        let org = ScopeKey::Org("o".into());
        assert!(pat_allows(&["repo".into()], &repo).is_ok());
        let Err(Denied::Forbidden { message, .. }) = pat_allows(&["repo".into()], &org) else {
            panic!("repo scope must not manage org runners");
        };
        assert!(message.contains("admin:org"), "{message}");
    }

    #[test]
    fn unknown_and_pat_credentials_are_told_apart() {
        let st = State::new(FakeConfig::default()).unwrap();
        let pat = format!("Bearer {}", crate::fake_github::config::ALL_GRANTS_PAT);
        assert_eq!(classify(&st, Some(&pat)), Cred::Pat(0));
        assert_eq!(classify(&st, Some("token nope")), Cred::Unknown);
        assert_eq!(classify(&st, None), Cred::None);
        assert_eq!(
            Cred::Pat(0).redacted(Some(&pat)).as_deref(),
            Some("Bearer <pat>")
        );
    }
}
