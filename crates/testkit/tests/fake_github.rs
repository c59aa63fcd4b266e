//! The fake GitHub over real HTTP on loopback, with plain reqwest calls written here (not the
//! product's client): scopes, PATs and the App, error answers, the runner's side, pagination,
//! faults, the CLI. Every test ends by checking every answer the fake gave against
//! `runners-openapi.json`.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use sysrunner_testkit::fake_github::{
    ALL_GRANTS_PAT, APP_CLIENT_ID, APP_ID, ControlClient, ENTERPRISE_INSTALLATION_ID, FakeConfig,
    FakeGitHub, Fault, FaultRule, JobResult, JobSpec, JobStatus, NewRunner, ORG_INSTALLATION_ID,
    Outcome, REPO_ONLY_PAT, SetRunnerState,
};
use sysrunner_testkit::openapi;

const REPO: &str = "/repos/octo-org/octo-repo";
const ORG: &str = "/orgs/octo-org";
const ENT: &str = "/enterprises/octo-ent";

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

struct Gh {
    fake: FakeGitHub,
    http: reqwest::Client,
    ctl: ControlClient,
}

impl Gh {
    async fn start() -> Gh {
        Gh::start_with(FakeConfig::default()).await
    }

    async fn start_with(cfg: FakeConfig) -> Gh {
        let fake = FakeGitHub::start(cfg).await.expect("the fake starts");
        let ctl = fake.control();
        Gh {
            fake,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            ctl,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.api_url())
    }

    /// A REST call with GitHub's usual headers and `Authorization: Bearer <token>`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("user-agent", "sysrunner-tests")
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the fake answers");
        into_resp(resp).await
    }

    async fn pat(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.call(method, path, Some(ALL_GRANTS_PAT), body).await
    }

    /// A call on the runner's side with the runner's secret.
    async fn runner(&self, method: Method, path: &str, secret: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(
                method,
                format!("{}/_fake/runner/{path}", self.fake.web_url()),
            )
            .header("authorization", format!("Bearer {secret}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_resp(req.send().await.expect("the fake answers")).await
    }

    /// Every answer this fake gave conforms to the OpenAPI description.
    async fn finish(self) -> usize {
        let records = self.ctl.requests().await.unwrap();
        match openapi::load() {
            Some(api) => api.assert_conforms(&records),
            None => 0,
        }
    }
}

async fn into_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// The three identity files from an `encoded_jit_config`.
fn decode_jit(encoded: &str) -> (Value, Value, Value) {
    let outer: Value = serde_json::from_slice(&B64.decode(encoded).expect("base64")).expect("JSON");
    let file = |k: &str| -> Value {
        let inner = B64
            .decode(outer[k].as_str().unwrap_or_else(|| panic!("{k} missing")))
            .unwrap();
        serde_json::from_slice(&inner).unwrap()
    };
    assert_eq!(
        outer.as_object().unwrap().len(),
        3,
        "exactly the three files"
    );
    (
        file(".runner"),
        file(".credentials"),
        file(".credentials_rsaparams"),
    )
}

fn jit_body(name: &str, group: u64) -> Value {
    json!({"name": name, "runner_group_id": group, "labels": ["self-hosted", "X64", "gpu"], "work_folder": "_work"})
}

#[tokio::test]
async fn repository_scope_with_a_pat_registers_lists_labels_and_deletes() {
    let gh = Gh::start().await;
    let r = gh
        .pat(
            Method::POST,
            &format!("{REPO}/actions/runners/registration-token"),
            None,
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["token"].as_str().unwrap().len(), 29);
    assert!(r.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let r = gh
        .pat(
            Method::POST,
            &format!("{REPO}/actions/runners/remove-token"),
            None,
        )
        .await;
    assert_eq!(r.status, 201);

    let r = gh
        .pat(
            Method::POST,
            &format!("{REPO}/actions/runners/generate-jitconfig"),
            Some(jit_body("box-1", 1)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let runner = &r.body["runner"];
    let id = runner["id"].as_u64().unwrap();
    assert_eq!(runner["status"], "offline");
    assert_eq!(runner["busy"], false);
    assert_eq!(
        runner["labels"][0],
        json!({"id": runner["labels"][0]["id"], "name": "self-hosted", "type": "read-only"})
    );
    assert_eq!(runner["labels"][2]["type"], "custom");
    let (dot_runner, creds, rsa) = decode_jit(r.body["encoded_jit_config"].as_str().unwrap());
    assert_eq!(dot_runner["agentId"], json!(id));
    assert_eq!(dot_runner["agentName"], "box-1");
    assert_eq!(dot_runner["poolId"], 1);
    assert_eq!(dot_runner["ephemeral"], true);
    assert_eq!(dot_runner["workFolder"], "_work");
    assert_eq!(dot_runner["serverUrl"], json!(gh.fake.web_url()));
    assert_eq!(
        dot_runner["gitHubUrl"],
        json!(format!("{}/octo-org/octo-repo", gh.fake.web_url()))
    );
    assert_eq!(creds["scheme"], "OAuth");
    assert!(creds["data"]["clientId"].is_string());
    assert!(rsa["fakeRunnerSecret"].is_string());

    let r = gh
        .pat(
            Method::GET,
            &format!("{REPO}/actions/runners?name=box-1"),
            None,
        )
        .await;
    assert_eq!((r.status, r.body["total_count"].as_u64()), (200, Some(1)));
    let r = gh
        .pat(
            Method::GET,
            &format!("{REPO}/actions/runners?name=nobody"),
            None,
        )
        .await;
    assert_eq!(r.body["total_count"], 0);
    let r = gh
        .pat(Method::GET, &format!("{REPO}/actions/runners/{id}"), None)
        .await;
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some("box-1")));

    // Labels: add, set, remove one, remove all custom ones.
    let labels = format!("{REPO}/actions/runners/{id}/labels");
    let r = gh
        .pat(Method::POST, &labels, Some(json!({"labels": ["fast"]})))
        .await;
    assert_eq!((r.status, r.body["total_count"].as_u64()), (200, Some(4)));
    let r = gh
        .pat(Method::PUT, &labels, Some(json!({"labels": ["only"]})))
        .await;
    let names: Vec<&str> = r.body["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["self-hosted", "X64", "only"]);
    let r = gh.pat(Method::DELETE, &format!("{labels}/X64"), None).await;
    assert_eq!(r.status, 422, "read-only labels stay");
    let r = gh
        .pat(Method::DELETE, &format!("{labels}/nope"), None)
        .await;
    assert_eq!(r.status, 404);
    let r = gh
        .pat(Method::DELETE, &format!("{labels}/only"), None)
        .await;
    assert_eq!((r.status, r.body["total_count"].as_u64()), (200, Some(2)));
    let r = gh
        .pat(Method::POST, &labels, Some(json!({"labels": []})))
        .await;
    assert_eq!(r.status, 422, "POST needs at least one label");
    let r = gh.pat(Method::DELETE, &labels, None).await;
    assert_eq!((r.status, r.body["total_count"].as_u64()), (200, Some(2)));
    let r = gh.pat(Method::GET, &labels, None).await;
    assert_eq!(r.status, 200);

    let r = gh
        .pat(
            Method::GET,
            &format!("{REPO}/actions/runners/downloads"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["os"] == "linux" && a["architecture"] == "x64")
    );
    let r = gh
        .pat(
            Method::GET,
            &format!("{REPO}/actions/runners/deprecations/2.300.0"),
            None,
        )
        .await;
    assert!(r.body["registration_deprecates_at"].is_string());
    let r = gh
        .pat(
            Method::GET,
            &format!("{REPO}/actions/runners/deprecations/2.336.0"),
            None,
        )
        .await;
    assert!(r.body["registration_deprecates_at"].is_null());

    let r = gh
        .pat(
            Method::DELETE,
            &format!("{REPO}/actions/runners/{id}"),
            None,
        )
        .await;
    assert_eq!((r.status, &r.body), (204, &Value::Null));
    let r = gh
        .pat(Method::GET, &format!("{REPO}/actions/runners/{id}"), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["message"], "Not Found");
    assert_eq!(gh.finish().await, 19);
}

#[tokio::test]
async fn org_and_enterprise_scopes_have_runner_groups() {
    let gh = Gh::start().await;
    let r = gh
        .pat(Method::GET, &format!("{ORG}/actions/runner-groups"), None)
        .await;
    assert_eq!(r.status, 200);
    let groups: Vec<(u64, &str)> = r.body["runner_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_u64().unwrap(), g["name"].as_str().unwrap()))
        .collect();
    assert_eq!(groups, [(1, "Default"), (2, "sysrunner")]);
    assert_eq!(r.body["runner_groups"][0]["default"], true);

    let r = gh
        .pat(
            Method::POST,
            &format!("{ORG}/actions/runners/generate-jitconfig"),
            Some(jit_body("org-1", 2)),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = r.body["runner"]["id"].as_u64().unwrap();
    assert_eq!(r.body["runner"]["runner_group_id"], 2);
    let (dot_runner, _, _) = decode_jit(r.body["encoded_jit_config"].as_str().unwrap());
    assert_eq!(
        dot_runner["gitHubUrl"],
        json!(format!("{}/octo-org", gh.fake.web_url()))
    );
    assert_eq!(dot_runner["poolName"], "sysrunner");
    let r = gh
        .pat(
            Method::POST,
            &format!("{ORG}/actions/runners/generate-jitconfig"),
            Some(jit_body("org-2", 9)),
        )
        .await;
    assert_eq!(r.status, 404, "unknown group");

    let r = gh
        .pat(
            Method::GET,
            &format!("{ORG}/actions/runner-groups/2/runners"),
            None,
        )
        .await;
    assert_eq!(r.body["total_count"], 1);
    let r = gh.pat(Method::POST, &format!("{ORG}/actions/runner-groups"), Some(json!({"name": "gpu", "visibility": "selected", "selected_repository_ids": [1_296_269], "runners": [id]}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_u64().unwrap();
    assert!(r.body["selected_repositories_url"].is_string());
    let r = gh
        .pat(Method::GET, &format!("{ORG}/actions/runners/{id}"), None)
        .await;
    assert_eq!(r.body["runner_group_id"], json!(gid));
    let r = gh
        .pat(
            Method::POST,
            &format!("{ORG}/actions/runner-groups"),
            Some(json!({"name": "GPU"})),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = gh
        .pat(
            Method::GET,
            &format!("{ORG}/actions/runner-groups/{gid}/repositories"),
            None,
        )
        .await;
    assert_eq!(r.body["repositories"][0]["full_name"], "octo-org/octo-repo");
    let r = gh
        .pat(
            Method::GET,
            &format!("{ORG}/actions/runner-groups?visible_to_repository=octo-repo"),
            None,
        )
        .await;
    assert_eq!(r.body["total_count"], 3);
    let r = gh
        .pat(
            Method::PATCH,
            &format!("{ORG}/actions/runner-groups/{gid}"),
            Some(json!({"name": "gpu2", "visibility": "private"})),
        )
        .await;
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some("gpu2")));
    let r = gh
        .pat(
            Method::DELETE,
            &format!("{ORG}/actions/runner-groups/{gid}/runners/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = gh
        .pat(
            Method::PUT,
            &format!("{ORG}/actions/runner-groups/{gid}/runners/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = gh
        .pat(
            Method::DELETE,
            &format!("{ORG}/actions/runner-groups/{gid}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = gh
        .pat(Method::GET, &format!("{ORG}/actions/runners/{id}"), None)
        .await;
    assert_eq!(
        r.body["runner_group_id"], 1,
        "runners of a deleted group go to Default"
    );
    let r = gh
        .pat(
            Method::DELETE,
            &format!("{ORG}/actions/runner-groups/1"),
            None,
        )
        .await;
    assert_eq!(r.status, 422, "Default stays");

    let r = gh
        .pat(Method::GET, &format!("{ENT}/actions/runner-groups"), None)
        .await;
    assert_eq!(r.body["total_count"], 1);
    assert!(r.body["runner_groups"][0]["selected_organizations_url"].is_string());
    let r = gh
        .pat(
            Method::PUT,
            &format!("{ENT}/actions/runner-groups/1/organizations"),
            Some(json!({"selected_organization_ids": [9919]})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = gh
        .pat(
            Method::GET,
            &format!("{ENT}/actions/runner-groups/1/organizations"),
            None,
        )
        .await;
    assert_eq!(r.body["organizations"][0]["login"], "octo-org");
    let r = gh
        .pat(
            Method::POST,
            &format!("{ENT}/actions/runners/generate-jitconfig"),
            Some(jit_body("ent-1", 1)),
        )
        .await;
    assert_eq!(r.status, 201);
    let (dot_runner, _, _) = decode_jit(r.body["encoded_jit_config"].as_str().unwrap());
    assert_eq!(
        dot_runner["gitHubUrl"],
        json!(format!("{}/enterprises/octo-ent", gh.fake.web_url()))
    );
    // Names are unique per scope, not across scopes.
    let r = gh
        .pat(
            Method::POST,
            &format!("{REPO}/actions/runners/generate-jitconfig"),
            Some(jit_body("ent-1", 1)),
        )
        .await;
    assert_eq!(r.status, 201);
    gh.finish().await;
}

#[tokio::test]
async fn credentials_and_request_checks_answer_like_github() {
    let gh = Gh::start().await;
    let list = format!("{ORG}/actions/runners");
    let r = gh.call(Method::GET, &list, Some("ghp_nope"), None).await;
    assert_eq!((r.status, r.message()), (401, "Bad credentials"));
    let r = gh.call(Method::GET, &list, None, None).await;
    assert_eq!((r.status, r.message()), (401, "Requires authentication"));
    let r = gh.call(Method::GET, &list, Some(REPO_ONLY_PAT), None).await;
    assert_eq!(r.status, 403);
    assert!(r.message().contains("admin:org"), "{}", r.message());
    assert_eq!(
        r.header("x-accepted-oauth-scopes"),
        Some("admin:org, manage_runners:org")
    );
    let r = gh
        .call(
            Method::GET,
            &format!("{ENT}/actions/runners"),
            Some(REPO_ONLY_PAT),
            None,
        )
        .await;
    assert!(r.message().contains("manage_runners:enterprise"));
    let r = gh
        .call(
            Method::GET,
            &format!("{REPO}/actions/runners"),
            Some(REPO_ONLY_PAT),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    for unknown in [
        "/orgs/nobody/actions/runners",
        "/repos/octo-org/nope/actions/runners",
        "/enterprises/x/actions/runners",
        "/orgs/octo-org/actions/nothing",
    ] {
        let r = gh.pat(Method::GET, unknown, None).await;
        assert_eq!((r.status, r.message()), (404, "Not Found"), "{unknown}");
    }
    // `token X` is accepted like `Bearer X`; names are not case sensitive.
    let r = gh
        .http
        .get(gh.url("/orgs/OCTO-ORG/actions/runners"))
        .header("user-agent", "t")
        .header("authorization", format!("token {ALL_GRANTS_PAT}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = into_resp(
        gh.http
            .get(gh.url(&list))
            .header("authorization", format!("Bearer {ALL_GRANTS_PAT}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.message().contains("User-Agent"));
    let r = into_resp(
        gh.http
            .get(gh.url(&list))
            .header("user-agent", "t")
            .header("x-github-api-version", "2099-01-01")
            .header("authorization", format!("Bearer {ALL_GRANTS_PAT}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    // Every answer carries the rate-limit headers and a request id; /rate_limit is free.
    let r = gh.pat(Method::GET, &list, None).await;
    let used: u64 = r.header("x-ratelimit-used").unwrap().parse().unwrap();
    assert_eq!(r.header("x-ratelimit-resource"), Some("core"));
    assert!(r.header("x-github-request-id").is_some());
    let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset > support::now());
    let rl = gh.call(Method::GET, "/rate_limit", None, None).await;
    assert_eq!(rl.body["resources"]["core"]["used"], json!(used));
    assert_eq!(rl.body["rate"]["remaining"], json!(5000 - used));
    // The log shows the credential's kind, never its value.
    let log = gh.ctl.requests().await.unwrap();
    assert!(log.iter().all(|rec| {
        !serde_json::to_string(&rec.request_headers)
            .unwrap()
            .contains(ALL_GRANTS_PAT)
    }));
    assert_eq!(log[0].request_headers["authorization"], "Bearer <unknown>");
    assert_eq!(log[2].request_headers["authorization"], "Bearer <pat>");
    gh.finish().await;
}

#[tokio::test]
async fn app_jwt_installation_tokens_and_their_limits() {
    let cfg = FakeConfig {
        installation_token_ttl_secs: 2,
        ..FakeConfig::default()
    };
    let gh = Gh::start_with(cfg).await;
    let now = support::now();
    let jwt = support::app_jwt("app.pem", json!(APP_ID), now - 60, now + 530);
    let r = gh.call(Method::GET, "/app", Some(&jwt), None).await;
    assert_eq!((r.status, r.body["id"].as_u64()), (200, Some(APP_ID)));
    assert_eq!(r.body["client_id"], APP_CLIENT_ID);
    for (path, id) in [
        (format!("{ORG}/installation"), ORG_INSTALLATION_ID),
        (format!("{REPO}/installation"), ORG_INSTALLATION_ID),
        (format!("{ENT}/installation"), ENTERPRISE_INSTALLATION_ID),
    ] {
        let r = gh.call(Method::GET, &path, Some(&jwt), None).await;
        assert_eq!((r.status, r.body["id"].as_u64()), (200, Some(id)), "{path}");
    }
    let r = gh
        .call(Method::GET, "/orgs/nobody/installation", Some(&jwt), None)
        .await;
    assert_eq!(r.status, 404);
    // The client id and the id as a string are accepted issuers too.
    for iss in [json!(APP_CLIENT_ID), json!(APP_ID.to_string())] {
        let j = support::app_jwt("app.pem", iss, now - 60, now + 530);
        assert_eq!(
            gh.call(Method::GET, "/app", Some(&j), None).await.status,
            200
        );
    }
    // Refused JWTs: exp 10 minutes or more ahead of the server's clock, expired, wrong key, wrong
    // issuer, iat ahead. (Exactly 10 minutes cannot be pinned from outside the server's clock: a
    // second may tick between signing and checking; 10 s over is robust on a loaded machine.)
    for (what, j) in [
        (
            "10 minutes ahead",
            support::app_jwt("app.pem", json!(APP_ID), now, now + 610),
        ),
        (
            "more than 10 minutes",
            support::app_jwt("app.pem", json!(APP_ID), now - 60, now + 660),
        ),
        (
            "expired",
            support::app_jwt("app.pem", json!(APP_ID), now - 600, now - 1),
        ),
        (
            "other key",
            support::app_jwt("other.pem", json!(APP_ID), now - 60, now + 530),
        ),
        (
            "other issuer",
            support::app_jwt("app.pem", json!(1), now - 60, now + 530),
        ),
        (
            "iat in the future",
            support::app_jwt("app.pem", json!(APP_ID), now + 300, now + 530),
        ),
    ] {
        let r = gh.call(Method::GET, "/app", Some(&j), None).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
    }
    let r = gh
        .call(Method::GET, "/app", Some(ALL_GRANTS_PAT), None)
        .await;
    assert_eq!(
        (r.status, r.message()),
        (401, "A JSON web token could not be decoded")
    );
    let r = gh
        .call(
            Method::GET,
            &format!("{ORG}/actions/runners"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "a JWT is only for /app and installations");

    let r = gh
        .call(
            Method::POST,
            &format!("/app/installations/{ORG_INSTALLATION_ID}/access_tokens"),
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ghs_"));
    let r2 = gh
        .call(
            Method::POST,
            "/app/installations/999/access_tokens",
            Some(&jwt),
            None,
        )
        .await;
    assert_eq!(r2.status, 404);
    let r2 = gh
        .call(
            Method::POST,
            &format!("/app/installations/{ORG_INSTALLATION_ID}/access_tokens"),
            Some(&jwt),
            Some(json!({"permissions": {"issues": "write"}})),
        )
        .await;
    assert_eq!(r2.status, 422);
    for path in [
        format!("{ORG}/actions/runners"),
        format!("{REPO}/actions/runners"),
    ] {
        let r = gh.call(Method::GET, &path, Some(&token), None).await;
        assert_eq!(r.status, 200, "{path}");
    }
    let r = gh
        .call(
            Method::POST,
            &format!("{ORG}/actions/runners/generate-jitconfig"),
            Some(&token),
            Some(jit_body("app-1", 1)),
        )
        .await;
    assert_eq!(r.status, 201);

    // A token restricted to read cannot write; one for the enterprise cannot manage runners.
    let ro = gh
        .call(
            Method::POST,
            &format!("/app/installations/{ORG_INSTALLATION_ID}/access_tokens"),
            Some(&jwt),
            Some(json!({"permissions": {"organization_self_hosted_runners": "read"}})),
        )
        .await;
    let ro = ro.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        gh.call(
            Method::GET,
            &format!("{ORG}/actions/runners"),
            Some(&ro),
            None
        )
        .await
        .status,
        200
    );
    let r = gh
        .call(
            Method::POST,
            &format!("{ORG}/actions/runners/registration-token"),
            Some(&ro),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.message().contains("organization_self_hosted_runners"));
    let ent = gh
        .call(
            Method::POST,
            &format!("/app/installations/{ENTERPRISE_INSTALLATION_ID}/access_tokens"),
            Some(&jwt),
            None,
        )
        .await;
    let ent = ent.body["token"].as_str().unwrap().to_string();
    let r = gh
        .call(
            Method::GET,
            &format!("{ENT}/actions/runners"),
            Some(&ent),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.message().contains("enterprise"), "{}", r.message());

    // Expiry (TTL 2 s): the clock moves instead of the test sleeping.
    gh.ctl.advance_clock(3).await.unwrap();
    let r = gh
        .call(
            Method::GET,
            &format!("{ORG}/actions/runners"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!((r.status, r.message()), (401, "Bad credentials"));
    let fresh = support::app_jwt("app.pem", json!(APP_ID), now + 3 - 60, now + 3 + 530);
    let r = gh
        .call(
            Method::POST,
            &format!("/app/installations/{ORG_INSTALLATION_ID}/access_tokens"),
            Some(&fresh),
            None,
        )
        .await;
    let renewed = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        gh.call(
            Method::GET,
            &format!("{ORG}/actions/runners"),
            Some(&renewed),
            None
        )
        .await
        .status,
        200
    );
    gh.finish().await;
}

#[tokio::test]
async fn conflicts_busy_runners_and_validation() {
    let gh = Gh::start().await;
    let jit = format!("{ORG}/actions/runners/generate-jitconfig");
    let r = gh.pat(Method::POST, &jit, Some(jit_body("dup", 1))).await;
    let id = r.body["runner"]["id"].as_u64().unwrap();
    let r = gh.pat(Method::POST, &jit, Some(jit_body("DUP", 1))).await;
    assert_eq!(
        (r.status, r.message()),
        (
            409,
            "Already exists - A runner with the name DUP already exists."
        )
    );
    for bad in [
        json!({"name": "x", "runner_group_id": 1, "labels": []}),
        json!({"runner_group_id": 1, "labels": ["a"]}),
        json!({"name": "x", "labels": ["a"]}),
    ] {
        let r = gh.pat(Method::POST, &jit, Some(bad.clone())).await;
        assert_eq!(r.status, 422, "{bad}");
    }
    let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
    let r = gh
        .pat(
            Method::POST,
            &jit,
            Some(json!({"name": "x", "runner_group_id": 1, "labels": many})),
        )
        .await;
    assert_eq!(r.status, 422);
    let raw = gh
        .http
        .post(gh.url(&jit))
        .header("user-agent", "t")
        .header("authorization", format!("Bearer {ALL_GRANTS_PAT}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);

    gh.ctl
        .set_runner_state(
            id,
            &SetRunnerState {
                status: Some("online".into()),
                busy: Some(true),
            },
        )
        .await
        .unwrap();
    let r = gh
        .pat(Method::GET, &format!("{ORG}/actions/runners/{id}"), None)
        .await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["busy"].as_bool()),
        (Some("online"), Some(true))
    );
    let r = gh
        .pat(Method::DELETE, &format!("{ORG}/actions/runners/{id}"), None)
        .await;
    assert_eq!(
        (r.status, r.message()),
        (422, "Bad request - Runner \"dup\" is still running a job")
    );
    gh.ctl
        .set_runner_state(
            id,
            &SetRunnerState {
                status: Some("offline".into()),
                busy: Some(false),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        gh.pat(Method::DELETE, &format!("{ORG}/actions/runners/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        gh.pat(Method::DELETE, &format!("{ORG}/actions/runners/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        gh.pat(Method::GET, &format!("{ORG}/actions/runners/123456"), None)
            .await
            .status,
        404
    );
    gh.finish().await;
}

#[tokio::test]
async fn an_ephemeral_jit_runner_runs_one_job_then_disappears() {
    let gh = Gh::start().await;
    let r = gh
        .pat(
            Method::POST,
            &format!("{REPO}/actions/runners/generate-jitconfig"),
            Some(jit_body("eph-1", 1)),
        )
        .await;
    let id = r.body["runner"]["id"].as_u64().unwrap();
    let (_, _, rsa) = decode_jit(r.body["encoded_jit_config"].as_str().unwrap());
    let secret = rsa["fakeRunnerSecret"].as_str().unwrap().to_string();

    assert_eq!(
        gh.runner(Method::POST, "session", "wrong", None)
            .await
            .status,
        401
    );
    let s = gh
        .runner(
            Method::POST,
            "session",
            &secret,
            Some(json!({"os": "Linux", "version": "2.336.0"})),
        )
        .await;
    assert_eq!(s.status, 200);
    let session = s.body["session_id"].as_str().unwrap().to_string();
    assert_eq!(s.body["runner_id"], json!(id));
    let r = gh
        .pat(Method::GET, &format!("{REPO}/actions/runners/{id}"), None)
        .await;
    assert_eq!(
        (
            r.body["status"].as_str(),
            r.body["version"].as_str(),
            r.body["os"].as_str()
        ),
        (Some("online"), Some("2.336.0"), Some("Linux"))
    );
    // A second process with the same identity is a session conflict.
    assert_eq!(
        gh.runner(Method::POST, "session", &secret, None)
            .await
            .status,
        409
    );

    // The poll waits; queueing the job wakes it.
    let poll = {
        let (http, url, secret) = (
            gh.http.clone(),
            format!(
                "{}/_fake/runner/jobs/next?session={session}&wait_secs=20",
                gh.fake.web_url()
            ),
            secret.clone(),
        );
        tokio::spawn(async move {
            into_resp(http.get(url).bearer_auth(secret).send().await.unwrap()).await
        })
    };
    let job = gh
        .ctl
        .queue_job(&JobSpec {
            runner_name: "eph-1".into(),
            name: "build".into(),
            steps: vec!["echo hi".into()],
            scope: Some("repos/octo-org/octo-repo".into()),
            labels: vec![],
        })
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the poll answers")
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(
        (got.body["id"].as_u64(), got.body["name"].as_str()),
        (Some(job.id), Some("build"))
    );
    assert_eq!(got.body["steps"], json!(["echo hi"]));

    assert_eq!(
        gh.runner(
            Method::POST,
            &format!("jobs/{}/start", job.id),
            &secret,
            None
        )
        .await
        .status,
        204
    );
    let r = gh
        .pat(Method::GET, &format!("{REPO}/actions/runners/{id}"), None)
        .await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["busy"].as_bool()),
        (Some("online"), Some(true))
    );
    assert_eq!(
        gh.pat(
            Method::DELETE,
            &format!("{REPO}/actions/runners/{id}"),
            None
        )
        .await
        .status,
        422
    );
    assert_eq!(
        gh.ctl.job(job.id).await.unwrap().status,
        JobStatus::InProgress
    );
    let done = gh
        .runner(
            Method::POST,
            &format!("jobs/{}/complete", job.id),
            &secret,
            Some(json!({"result": "Succeeded", "output": "hi\n"})),
        )
        .await;
    assert_eq!(done.status, 204);
    let job = gh
        .ctl
        .wait_job(job.id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (job.result, job.output.as_str(), job.runner_id),
        (Some(JobResult::Succeeded), "hi\n", Some(id))
    );
    assert_eq!(
        gh.pat(Method::GET, &format!("{REPO}/actions/runners/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        gh.pat(Method::GET, &format!("{REPO}/actions/runners"), None)
            .await
            .body["total_count"],
        0
    );
    assert!(gh.ctl.runners().await.unwrap().is_empty());
    // The gone runner's credential is refused.
    assert_eq!(
        gh.runner(
            Method::DELETE,
            &format!("session?session={session}"),
            &secret,
            None
        )
        .await
        .status,
        401
    );
    gh.finish().await;
}

/// A JIT runner of `name` with an open session: (runner id, secret, session).
async fn online_jit_runner(gh: &Gh, name: &str) -> (u64, String, String, Resp) {
    let r = gh
        .pat(
            Method::POST,
            &format!("{REPO}/actions/runners/generate-jitconfig"),
            Some(jit_body(name, 1)),
        )
        .await;
    let id = r.body["runner"]["id"].as_u64().unwrap();
    let (_, _, rsa) = decode_jit(r.body["encoded_jit_config"].as_str().unwrap());
    let secret = rsa["fakeRunnerSecret"].as_str().unwrap().to_string();
    let s = gh.runner(Method::POST, "session", &secret, None).await;
    assert_eq!(s.status, 200, "{}", s.message());
    let session = s.body["session_id"].as_str().unwrap().to_string();
    (id, secret, session, s)
}

/// The job poll of a runner: the job it gets now, if any (`wait_secs=0`).
async fn poll_now(gh: &Gh, secret: &str, session: &str) -> Resp {
    gh.runner(
        Method::GET,
        &format!("jobs/next?session={session}&wait_secs=0"),
        secret,
        None,
    )
    .await
}

async fn status_of(gh: &Gh, id: u64) -> (Option<String>, Option<bool>) {
    let r = gh
        .pat(Method::GET, &format!("{REPO}/actions/runners/{id}"), None)
        .await;
    (
        r.body["status"].as_str().map(String::from),
        r.body["busy"].as_bool(),
    )
}

#[tokio::test]
async fn a_silent_runner_goes_offline_its_running_job_fails_and_a_handed_out_one_is_requeued() {
    let gh = Gh::start_with(FakeConfig {
        runner_session_idle_secs: 8,
        ..FakeConfig::default()
    })
    .await;
    let job_for = |name: &str| JobSpec {
        runner_name: name.into(),
        name: format!("job of {name}"),
        steps: vec!["true".into()],
        scope: None,
        labels: vec![],
    };

    // A runner that started its job and then fell silent (its box was SIGKILLed).
    let (busy, busy_secret, busy_session, s) = online_jit_runner(&gh, "silent-busy").await;
    assert_eq!(s.body["renew_secs"], json!(2), "a quarter of the idle time");
    let running = gh.ctl.queue_job(&job_for("silent-busy")).await.unwrap();
    assert_eq!(poll_now(&gh, &busy_secret, &busy_session).await.status, 200);
    let start = format!("jobs/{}/start", running.id);
    assert_eq!(
        gh.runner(Method::POST, &start, &busy_secret, None)
            .await
            .status,
        204
    );
    let renew = format!("jobs/{}/renew?session={busy_session}", running.id);
    assert_eq!(
        gh.runner(Method::POST, &renew, &busy_secret, None)
            .await
            .status,
        204
    );

    // A runner that was handed a job and fell silent before starting it.
    let (handed, handed_secret, handed_session, _) = online_jit_runner(&gh, "silent-handed").await;
    let handed_job = gh.ctl.queue_job(&job_for("silent-handed")).await.unwrap();
    assert_eq!(
        poll_now(&gh, &handed_secret, &handed_session).await.status,
        200
    );

    // A runner that keeps polling, and one the control API holds online.
    let (alive, alive_secret, alive_session, _) = online_jit_runner(&gh, "alive").await;
    let (held, _, _, _) = online_jit_runner(&gh, "held").await;
    // `held`'s own session is ended the control API's way, then the control API holds it online.
    for status in ["offline", "online"] {
        let set = SetRunnerState {
            status: Some(status.into()),
            busy: None,
        };
        gh.ctl.set_runner_state(held, &set).await.unwrap();
    }

    gh.ctl.advance_clock(5).await.unwrap();
    assert_eq!(
        poll_now(&gh, &alive_secret, &alive_session).await.status,
        204
    );
    assert_eq!(
        status_of(&gh, busy).await,
        (Some("online".into()), Some(true)),
        "5 s of 8"
    );
    gh.ctl.advance_clock(4).await.unwrap();

    assert_eq!(
        status_of(&gh, busy).await,
        (Some("offline".into()), Some(false))
    );
    let failed = gh.ctl.job(running.id).await.unwrap();
    assert_eq!(
        (failed.status, failed.result),
        (JobStatus::Completed, Some(JobResult::Failed))
    );
    assert!(
        failed
            .output
            .contains("silent-busy lost communication with the server"),
        "{}",
        failed.output
    );
    // Its renewal and its completion come too late: the job is no longer its.
    assert_eq!(
        gh.runner(Method::POST, &renew, &busy_secret, None)
            .await
            .status,
        409
    );
    // It stays registered, offline, for its owner to delete (an ephemeral runner is removed only
    // when it finishes a job itself).
    assert_eq!(
        gh.pat(
            Method::DELETE,
            &format!("{REPO}/actions/runners/{busy}"),
            None
        )
        .await
        .status,
        204
    );

    assert_eq!(
        status_of(&gh, handed).await,
        (Some("offline".into()), Some(false))
    );
    let requeued = gh.ctl.job(handed_job.id).await.unwrap();
    assert_eq!(
        (requeued.status, requeued.runner_id),
        (JobStatus::Queued, None)
    );

    assert_eq!(
        status_of(&gh, alive).await.0.as_deref(),
        Some("online"),
        "polled 4 s ago"
    );
    assert_eq!(
        status_of(&gh, held).await.0.as_deref(),
        Some("online"),
        "control-made"
    );
    // A lapsed runner opens a session again when its listener comes back.
    let again = gh
        .runner(Method::POST, "session", &handed_secret, None)
        .await;
    assert_eq!(again.status, 200);
    gh.finish().await;
}

#[tokio::test]
async fn config_exchange_session_and_remove() {
    let gh = Gh::start().await;
    let reg = gh
        .pat(
            Method::POST,
            &format!("{ORG}/actions/runners/registration-token"),
            None,
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/octo-org", gh.fake.web_url());
    let cfg = |name: &str, token: &str, replace: bool| json!({"url": url, "token": token, "name": name, "labels": ["docker"], "runner_group": "sysrunner", "work_folder": "w", "ephemeral": false, "replace": replace});
    let r = gh
        .runner(
            Method::POST,
            "config",
            "",
            Some(cfg("cfg-1", "WRONG", false)),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = gh
        .runner(
            Method::POST,
            "config",
            "",
            Some(
                json!({"url": format!("{}/nobody", gh.fake.web_url()), "token": reg, "name": "x"}),
            ),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = gh
        .runner(Method::POST, "config", "", Some(cfg("cfg-1", &reg, false)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let dot_runner = &r.body[".runner"];
    let id = dot_runner["agentId"].as_u64().unwrap();
    assert_eq!(
        (
            dot_runner["poolId"].as_u64(),
            dot_runner["ephemeral"].as_bool(),
            dot_runner["workFolder"].as_str()
        ),
        (Some(2), Some(false), Some("w"))
    );
    let secret = r.body[".credentials_rsaparams"]["fakeRunnerSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let rest = gh
        .pat(Method::GET, &format!("{ORG}/actions/runners/{id}"), None)
        .await;
    let names: Vec<&str> = rest.body["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["self-hosted", "Linux", "X64", "docker"]);
    assert_eq!(
        gh.runner(Method::POST, "config", "", Some(cfg("cfg-1", &reg, false)))
            .await
            .status,
        409
    );

    let s = gh.runner(Method::POST, "session", &secret, None).await;
    let session = s.body["session_id"].as_str().unwrap().to_string();
    let poll = gh
        .runner(
            Method::GET,
            &format!("jobs/next?session={session}&wait_secs=0"),
            &secret,
            None,
        )
        .await;
    assert_eq!(poll.status, 204, "no job: the poll ends empty");
    assert_eq!(
        gh.runner(
            Method::GET,
            "jobs/next?session=other&wait_secs=0",
            &secret,
            None
        )
        .await
        .status,
        409
    );
    assert_eq!(
        gh.runner(
            Method::DELETE,
            &format!("session?session={session}"),
            &secret,
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        gh.pat(Method::GET, &format!("{ORG}/actions/runners/{id}"), None)
            .await
            .body["status"],
        "offline"
    );

    // --replace gives the name to a new runner.
    let r = gh
        .runner(Method::POST, "config", "", Some(cfg("cfg-1", &reg, true)))
        .await;
    assert_eq!(r.status, 201);
    let new_id = r.body[".runner"]["agentId"].as_u64().unwrap();
    assert_ne!(new_id, id);
    let secret = r.body[".credentials_rsaparams"]["fakeRunnerSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let remove = gh
        .pat(
            Method::POST,
            &format!("{ORG}/actions/runners/remove-token"),
            None,
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        gh.runner(Method::POST, "remove", &secret, Some(json!({"token": reg})))
            .await
            .status,
        401,
        "a registration token does not remove"
    );
    assert_eq!(
        gh.runner(
            Method::POST,
            "remove",
            &secret,
            Some(json!({"token": remove}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        gh.pat(Method::GET, &format!("{ORG}/actions/runners"), None)
            .await
            .body["total_count"],
        0
    );
    gh.finish().await;
}

/// `Link` targets from a header: rel -> page number.
fn links(h: &str) -> std::collections::BTreeMap<String, (String, u64)> {
    h.split(", ")
        .map(|part| {
            let (url, rel) = part.split_once("; rel=").unwrap();
            let url = url.trim_matches(|c| c == '<' || c == '>').to_string();
            let page = url.rsplit("page=").next().unwrap().parse().unwrap();
            (rel.trim_matches('"').to_string(), (url, page))
        })
        .collect()
}

#[tokio::test]
async fn lists_paginate_with_link_headers_also_under_a_base_path() {
    let gh = Gh::start_with(FakeConfig {
        base_path: "/api/v3".into(),
        ..FakeConfig::default()
    })
    .await;
    assert!(gh.fake.api_url().ends_with("/api/v3"));
    for i in 0..75 {
        gh.ctl
            .create_runner(&NewRunner {
                scope: "orgs/octo-org".into(),
                name: format!("r-{i:03}"),
                labels: vec!["self-hosted".into()],
                runner_group_id: None,
                ephemeral: false,
            })
            .await
            .unwrap();
    }
    let list = format!("{ORG}/actions/runners");
    let r = gh.pat(Method::GET, &list, None).await;
    assert_eq!(
        (
            r.body["total_count"].as_u64(),
            r.body["runners"].as_array().unwrap().len()
        ),
        (Some(75), 30)
    );
    let l = links(r.header("link").expect("a Link header"));
    assert_eq!(l.keys().collect::<Vec<_>>(), ["last", "next"]);
    assert_eq!((l["next"].1, l["last"].1), (2, 3));
    assert!(l["next"].0.starts_with(&format!(
        "{}/api/v3/orgs/octo-org/actions/runners?",
        gh.fake.web_url()
    )));

    let mut seen = vec![];
    let mut next = Some(format!("{list}?per_page=30&page=1"));
    for _ in 0..5 {
        let Some(path) = next.take() else { break };
        let r = gh.pat(Method::GET, &path, None).await;
        seen.extend(
            r.body["runners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["name"].as_str().unwrap().to_string()),
        );
        next = r.header("link").and_then(|h| {
            links(h)
                .get("next")
                .map(|(u, _)| u.trim_start_matches(gh.fake.api_url()).to_string())
        });
    }
    assert_eq!(seen.len(), 75);
    assert_eq!(
        seen.iter().collect::<std::collections::BTreeSet<_>>().len(),
        75,
        "no runner twice"
    );

    let r = gh
        .pat(Method::GET, &format!("{list}?per_page=100&page=2"), None)
        .await;
    assert_eq!(r.body["runners"].as_array().unwrap().len(), 0);
    let r = gh
        .pat(
            Method::GET,
            &format!("{list}?per_page=10&page=4&name=r-005"),
            None,
        )
        .await;
    assert_eq!(r.body["total_count"], 1);
    let r = gh
        .pat(Method::GET, &format!("{list}?per_page=10&page=4"), None)
        .await;
    let l = links(r.header("link").unwrap());
    assert_eq!(
        (l["prev"].1, l["next"].1, l["last"].1, l["first"].1),
        (3, 5, 8, 1)
    );
    assert!(l["prev"].0.contains("per_page=10"));
    // The root serves the API too.
    let r = gh
        .http
        .get(format!("{}{list}", gh.fake.web_url()))
        .header("user-agent", "t")
        .bearer_auth(ALL_GRANTS_PAT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let records = gh.ctl.requests().await.unwrap();
    assert!(records.iter().all(|rec| {
        rec.api_path
            .as_deref()
            .is_some_and(|p| p.starts_with("/orgs/"))
    }));
    gh.finish().await;
}

#[tokio::test]
async fn injected_faults_answer_once_each_then_the_real_thing() {
    let gh = Gh::start().await;
    let jit = format!("{ORG}/actions/runners/generate-jitconfig");
    let rule = |fault: Fault, count: u32| FaultRule {
        method: "POST".into(),
        path: "*/generate-jitconfig".into(),
        count,
        fault,
    };

    gh.ctl
        .add_fault(&rule(Fault::ServerError { status: 502 }, 2))
        .await
        .unwrap();
    assert_eq!(
        gh.pat(Method::POST, &jit, Some(jit_body("f", 1)))
            .await
            .status,
        502
    );
    assert_eq!(
        gh.pat(Method::POST, &jit, Some(jit_body("f", 1)))
            .await
            .status,
        502
    );
    assert!(
        gh.ctl.runners().await.unwrap().is_empty(),
        "a 5xx fault does nothing"
    );

    gh.ctl
        .add_fault(&rule(
            Fault::TooManyRequests {
                retry_after_secs: 7,
            },
            1,
        ))
        .await
        .unwrap();
    let r = gh.pat(Method::POST, &jit, Some(jit_body("f", 1))).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));

    gh.ctl
        .add_fault(&rule(
            Fault::RateLimited {
                reset_after_secs: 30,
            },
            1,
        ))
        .await
        .unwrap();
    let before = support::now();
    let r = gh.pat(Method::POST, &jit, Some(jit_body("f", 1))).await;
    let after = support::now();
    assert_eq!(
        (r.status, r.header("x-ratelimit-remaining")),
        (403, Some("0"))
    );
    let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((before + 30..=after + 30).contains(&reset), "{reset}");
    assert!(r.message().contains("rate limit"));

    gh.ctl
        .add_fault(&rule(
            Fault::SecondaryRateLimit {
                retry_after_secs: Some(60),
            },
            1,
        ))
        .await
        .unwrap();
    gh.ctl
        .add_fault(&rule(
            Fault::SecondaryRateLimit {
                retry_after_secs: None,
            },
            1,
        ))
        .await
        .unwrap();
    let r = gh.pat(Method::POST, &jit, Some(jit_body("f", 1))).await;
    assert_eq!((r.status, r.header("retry-after")), (403, Some("60")));
    assert!(r.message().contains("secondary rate limit"));
    let r = gh.pat(Method::POST, &jit, Some(jit_body("f", 1))).await;
    assert_eq!((r.status, r.header("retry-after")), (403, None));

    // A hang outlasts the client's timeout; nothing happens.
    gh.ctl
        .add_fault(&rule(Fault::Hang { millis: 10_000 }, 1))
        .await
        .unwrap();
    let short = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = short
        .post(gh.url(&jit))
        .header("user-agent", "t")
        .bearer_auth(ALL_GRANTS_PAT)
        .json(&jit_body("f", 1))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(gh.ctl.runners().await.unwrap().is_empty());

    // Success with the connection dropped: the runner exists, the client saw an error, a retry is 409.
    gh.ctl
        .add_fault(&rule(Fault::DropAfterEffect, 1))
        .await
        .unwrap();
    let err = gh
        .http
        .post(gh.url(&jit))
        .header("user-agent", "t")
        .bearer_auth(ALL_GRANTS_PAT)
        .json(&jit_body("f", 1))
        .send()
        .await
        .unwrap_err();
    assert!(
        !err.is_timeout() && (err.is_request() || err.is_connect() || err.is_body()),
        "{err:?}"
    );
    let runners = gh.ctl.runners().await.unwrap();
    assert_eq!(
        runners.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["f"]
    );
    assert_eq!(
        gh.pat(Method::POST, &jit, Some(jit_body("f", 1)))
            .await
            .status,
        409
    );
    assert!(
        gh.ctl.faults().await.unwrap().is_empty(),
        "every rule used up"
    );

    let log = gh.ctl.requests().await.unwrap();
    let outcomes: Vec<(Option<u16>, Outcome, bool)> = log
        .iter()
        .map(|r| (r.status, r.outcome, r.fault.is_some()))
        .collect();
    assert!(outcomes.contains(&(None, Outcome::Hung, true)));
    assert!(outcomes.contains(&(Some(201), Outcome::Dropped, true)));
    assert_eq!(
        outcomes.last(),
        Some(&(Some(409), Outcome::Answered, false))
    );
    gh.finish().await;
}

/// Every operation of the description is served with its documented success status, and the
/// answer conforms: the fake has all of it.
#[tokio::test]
async fn every_operation_of_the_description_is_served() {
    let Some(api) = openapi::load() else { return };
    let mut cfg = FakeConfig::default();
    cfg.enterprises[0].runner_groups = vec!["sysrunner".into()];
    let mut exercised = 0;
    for op in api.operations() {
        // A fresh fake per operation: deletions cannot disturb the next one.
        let gh = Gh::start_with(cfg.clone()).await;
        let scope = if op.template.starts_with("/repos/") {
            "repos/octo-org/octo-repo"
        } else if op.template.starts_with("/orgs/") {
            "orgs/octo-org"
        } else {
            "enterprises/octo-ent"
        };
        let group = if scope.starts_with("repos") { 1 } else { 2 };
        let runner = gh
            .ctl
            .create_runner(&NewRunner {
                scope: scope.into(),
                name: "op-runner".into(),
                labels: vec!["self-hosted".into(), "gpu".into()],
                runner_group_id: Some(group),
                ephemeral: false,
            })
            .await
            .unwrap();
        let path = op
            .template
            .replace("{owner}", "octo-org")
            .replace("{repo}", "octo-repo")
            .replace("{org}", "octo-org")
            .replace("{enterprise}", "octo-ent")
            .replace("{runner_id}", &runner.id.to_string())
            .replace("{runner_group_id}", "2")
            .replace("{name}", "gpu")
            .replace("{version}", "2.336.0")
            .replace("{installation_id}", &ORG_INSTALLATION_ID.to_string())
            .replace("{repository_id}", "1296269")
            .replace("{org_id}", "9919");
        assert!(!path.contains('{'), "unfilled parameter in {path}");
        let body = op_body(&op.method, &op.template, runner.id);
        let now = support::now();
        let jwt = support::app_jwt("app.pem", json!(APP_ID), now - 60, now + 530);
        let app_only = op.template.starts_with("/app") || op.template.ends_with("/installation");
        let token = if app_only {
            jwt.as_str()
        } else {
            ALL_GRANTS_PAT
        };
        let method = Method::from_bytes(op.method.as_bytes()).unwrap();
        let r = gh.call(method, &path, Some(token), body).await;
        let documented: Vec<u16> = api.operation(op)["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|k| k.parse().ok())
            .filter(|s| (200..300).contains(s))
            .collect();
        assert!(
            documented.contains(&r.status),
            "{} {} answered {} {}, documented {documented:?}",
            op.method,
            path,
            r.status,
            r.body
        );
        let records = gh.ctl.requests().await.unwrap();
        assert_eq!(
            api.covered(&records).len(),
            1,
            "{} {}",
            op.method,
            op.template
        );
        exercised += gh.finish().await;
    }
    assert_eq!(exercised, api.operations().len());
    assert_eq!(
        api.operations().len(),
        71,
        "the description's operation count changed: review the fake"
    );
}

/// A request body for an operation that needs one (the description's examples, with ids of this fake).
fn op_body(method: &str, template: &str, runner_id: u64) -> Option<Value> {
    let t = template;
    Some(match method {
        "POST" if t.ends_with("/generate-jitconfig") => jit_body("jit-runner", 1),
        "POST" | "PUT" if t.ends_with("/labels") => json!({"labels": ["fast"]}),
        "POST" if t.ends_with("/runner-groups") => {
            json!({"name": "new group", "visibility": "all", "runners": [runner_id]})
        }
        "PATCH" => json!({"name": "renamed", "visibility": "all"}),
        "PUT" if t.ends_with("/runner-groups/{runner_group_id}/runners") => {
            json!({"runners": [runner_id]})
        }
        "PUT" if t.ends_with("/repositories") => json!({"selected_repository_ids": [1_296_269]}),
        "PUT" if t.ends_with("/organizations") => json!({"selected_organization_ids": [9919]}),
        "POST" if t.ends_with("/access_tokens") => {
            json!({"permissions": {"organization_self_hosted_runners": "write"}})
        }
        _ => return None,
    })
}

#[tokio::test]
async fn the_checker_catches_a_departure() {
    let Some(api) = openapi::load() else { return };
    let gh = Gh::start().await;
    gh.pat(Method::GET, &format!("{ORG}/actions/runners"), None)
        .await;
    let mut records = gh.ctl.requests().await.unwrap();
    assert_eq!(api.assert_conforms(&records), 1);
    let good = records[0].clone();
    records[0].response_body =
        Some(json!({"total_count": 1, "runners": [{"id": "seven", "name": "x"}]}));
    let bad = api.check_record(&records[0]);
    assert!(
        bad.len() >= 2,
        "wrong id type and missing required fields: {bad:?}"
    );
    let mut undocumented = good.clone();
    undocumented.status = Some(202);
    assert!(!api.check_record(&undocumented).is_empty());
    let mut error = good.clone();
    error.status = Some(404);
    error.response_body = Some(json!({"message": 404}));
    assert!(!api.check_record(&error).is_empty());
    let mut no_headers = good;
    no_headers.response_headers.clear();
    assert_eq!(api.check_record(&no_headers).len(), 6);
    // Formats are checked too: `expires_at` is a date-time.
    let tok = gh
        .pat(
            Method::POST,
            &format!("{REPO}/actions/runners/registration-token"),
            None,
        )
        .await;
    assert_eq!(tok.status, 201);
    let mut rec = gh.ctl.requests().await.unwrap().pop().unwrap();
    assert!(api.check_record(&rec).is_empty());
    rec.response_body = Some(json!({"token": "x", "expires_at": "in an hour"}));
    assert_eq!(
        api.check_record(&rec).len(),
        1,
        "{:?}",
        api.check_record(&rec)
    );
    // nullable in OpenAPI 3.0 is read as a union with null.
    let mut s = json!({"type": "string", "nullable": true, "properties": {"nullable": {"type": "integer"}}});
    openapi::nullable_to_json_schema(&mut s);
    assert_eq!(
        s,
        json!({"type": ["string", "null"], "properties": {"nullable": {"type": "integer"}}})
    );
    gh.finish().await;
}

#[test]
fn the_cli_serves_until_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sysrunner-testkit"))
        .args([
            "fake-github",
            "--listen",
            "127.0.0.1:0",
            "--base-path",
            "/api/v3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = http
            .get(format!("{url}/api/v3/rate_limit"))
            .header("user-agent", "t")
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    });
    assert_eq!(status, 200);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fake-github did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn the_cli_refuses_a_bad_listen_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sysrunner-testkit"))
        .args(["fake-github", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected IP:PORT"));
}

#[tokio::test]
async fn a_public_url_is_what_it_hands_out_when_others_reach_it_by_another_name() {
    // Listening on loopback, reached by a container as http://github:8080: the URLs it hands out
    // (control info, JIT configs, runner URLs) must name the latter. No traffic goes there.
    let cfg = FakeConfig {
        public_url: "http://github:8080/".into(),
        ..FakeConfig::default()
    };
    let fake = FakeGitHub::start(cfg).await.expect("the fake starts");
    assert_eq!(fake.web_url(), "http://github:8080");
    let ctl = ControlClient::new(&format!("http://{}", fake.addr()));
    let info = ctl.info().await.unwrap();
    assert_eq!(info.web_url, "http://github:8080");
    assert_eq!(info.api_url, "http://github:8080");
    fake.stop().await;
}

#[test]
fn the_kept_copy_of_the_description_is_the_shared_one() {
    let shared = openapi::shared_document_path();
    let Ok(want) = std::fs::read(&shared) else {
        eprintln!("no shared directory beside the checkout: the kept copy stands in for it");
        return;
    };
    let kept = std::fs::read(openapi::kept_copy_path())
        .expect("crates/testkit/tests/fixtures/github-api/runners-openapi.json");
    assert!(
        kept == want,
        "crates/testkit/tests/fixtures/github-api/runners-openapi.json differs from {}: copy it over",
        shared.display()
    );
}
