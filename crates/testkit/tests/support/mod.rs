//! Helpers for the kit's integration tests: App JWTs signed with the test keys. (The OpenAPI
//! conformance checker is the library's `openapi`: sysrunner's client tests use it too.)
#![allow(dead_code)]

use std::path::PathBuf;

/// The package's root (where `tests/keys` lives).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A PEM from `tests/keys/`.
pub fn key(name: &str) -> Vec<u8> {
    let path = crate_root().join("tests/keys").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An App JWT (RS256) with these claims, signed with `tests/keys/<key_file>`.
pub fn app_jwt(key_file: &str, iss: serde_json::Value, iat: i64, exp: i64) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key(key_file)).expect("an RSA PEM");
    let claims = serde_json::json!({ "iss": iss, "iat": iat, "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .expect("signing works")
}
