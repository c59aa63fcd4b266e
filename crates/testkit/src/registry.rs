//! Two image registries for the pull-through cache's tests and benchmark: Debian's
//! `docker-registry` (distribution 2.8) as the **upstream**, a plain registry seeded with a
//! multi-layer test image, in a network namespace of its own; and a second one in proxy mode as
//! the **cache** (`proxy: remoteurl:` the upstream), in a namespace the caller names (the rig's
//! fake-GitHub namespace, which is every box's default route), linked to the upstream by a veth
//! pair. The upstream is reachable only from the namespaces linked to it (they do not forward),
//! so a box's dockerd can pull only through the cache. Both write their access logs to files, from
//! which [`Served`] counts the blob requests and the bytes they served. Also the caches that must be
//! skipped: one that hangs (accepts, never answers). Owns its namespaces, links, processes and
//! temporary directories; all go on drop. Nothing leaves these namespaces.

use crate::boxes::network::Netns;
use crate::rig::Rig;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Debian's `docker-registry` package (distribution 2.8.2).
pub const REGISTRY: &str = "/usr/bin/docker-registry";
/// The test image as a job pulls it: a Docker Hub short name, so that dockerd asks its mirror.
pub const IMAGE: &str = "testimg:1";
/// The test image's repository and tag in a registry.
pub const REPOSITORY: &str = "library/testimg";
pub const TAG: &str = "1";
/// The port both registries listen on.
pub const PORT: u16 = 5000;
/// The upstream's address, on its namespace's loopback: the same whatever links to it.
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 1);

/// What is missing here for the registries, in words; `None` when nothing is.
pub fn missing() -> Option<String> {
    let need = [(REGISTRY, "docker-registry"), ("/usr/bin/gzip", "gzip")];
    let gone: Vec<&str> = need
        .iter()
        .filter(|(p, _)| !Path::new(p).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    (!gone.is_empty()).then(|| {
        format!(
            "no {} (apt-get install {})",
            gone.join(", "),
            gone.join(" ")
        )
    })
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A blob of the test image: its digest (`sha256:…`) and size.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    data: Vec<u8>,
}

impl Blob {
    fn new(data: Vec<u8>) -> Blob {
        Blob {
            digest: format!("sha256:{}", sha256_hex(&data)),
            size: data.len() as u64,
            data,
        }
    }
}

/// `library/testimg:1`: a busybox layer and three layers of random bytes (seeded, so the same
/// digests every time), gzipped, with a schema 2 manifest.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub layers: Vec<Blob>,
    pub config: Blob,
    pub manifest: Vec<u8>,
}

/// `application/vnd.docker.distribution.manifest.v2+json`
const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

impl TestImage {
    /// Builds it in memory (tar, gzip and sha256sum do the work, as files under a temp dir).
    pub fn build() -> Result<TestImage, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let busybox = dir.path().join("busybox.tar");
        crate::image::write_busybox_rootfs(&busybox).map_err(|e| format!("busybox layer: {e}"))?;
        let mut tars = vec![busybox];
        for (i, size) in [1_500_000usize, 1_000_000, 500_000].into_iter().enumerate() {
            use rand::{RngCore, SeedableRng};
            let tree = dir.path().join(format!("layer{i}"));
            std::fs::create_dir_all(tree.join("data")).map_err(|e| e.to_string())?;
            let mut bytes = vec![0u8; size];
            rand::rngs::StdRng::seed_from_u64(18 + i as u64).fill_bytes(&mut bytes);
            std::fs::write(tree.join(format!("data/{i}.bin")), bytes).map_err(|e| e.to_string())?;
            let tar = dir.path().join(format!("layer{i}.tar"));
            run(Command::new("tar")
                .args([
                    "--sort=name",
                    "--mtime=@0",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "-cf",
                ])
                .arg(&tar)
                .arg("-C")
                .arg(&tree)
                .arg("data"))?;
            tars.push(tar);
        }
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in &tars {
            let raw = std::fs::read(tar).map_err(|e| format!("{}: {e}", tar.display()))?;
            diff_ids.push(format!("sha256:{}", sha256_hex(&raw)));
            let gz = run(Command::new("gzip").args(["-n", "-1", "-c"]).arg(tar))?;
            layers.push(Blob::new(gz));
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/busybox", "ls", "-l", "/data"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = Blob::new(config.to_string().into_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.size,
                "digest": config.digest,
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": l.size,
                "digest": l.digest,
            })).collect::<Vec<_>>(),
        });
        Ok(TestImage {
            layers,
            config,
            manifest: manifest.to_string().into_bytes(),
        })
    }

    /// The bytes a pull fetches: the layers, the config and the manifest.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>()
            + self.config.size
            + self.manifest.len() as u64
    }
}

/// Runs `cmd`, its stdout.
fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// sha256 of `data`, in hex, by coreutils' `sha256sum` (the kit has no hash crate).
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sha256sum");
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sha256sum's output");
    writer
        .join()
        .expect("the writer")
        .expect("write to sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum printed a hash")
        .to_string()
}

/// What a registry served, from its access log: blob GETs (`GET /v2/…/blobs/sha256:…`) and the
/// bytes their answers carried, and every request. Subtract two to get what happened between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    pub blob_gets: usize,
    pub blob_bytes: u64,
    /// `GET /v2/…/manifests/…`: what Docker Hub's pull rate limit counts (HEADs are free).
    pub manifest_gets: usize,
    pub requests: usize,
}

impl std::ops::Sub for Served {
    type Output = Served;
    fn sub(self, o: Served) -> Served {
        Served {
            blob_gets: self.blob_gets - o.blob_gets,
            blob_bytes: self.blob_bytes - o.blob_bytes,
            manifest_gets: self.manifest_gets - o.manifest_gets,
            requests: self.requests - o.requests,
        }
    }
}

impl Served {
    /// Reads distribution's access log lines (combined log format, on its stdout) in `log`:
    /// `IP - - [time] "GET /v2/library/x/blobs/sha256:… HTTP/1.1" 200 1234 "" "agent"`. Its
    /// logrus lines (`time="…" level=…`) are not counted.
    pub fn of_log(log: &str) -> Served {
        let mut s = Served::default();
        for line in log.lines() {
            let Some((_, rest)) = line.split_once("] \"") else {
                continue;
            };
            let Some((request, rest)) = rest.split_once("\" ") else {
                continue;
            };
            s.requests += 1;
            let mut words = request.split(' ');
            let (method, uri) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            if method == "GET" && uri.starts_with("/v2/") && uri.contains("/manifests/") {
                s.manifest_gets += 1;
            }
            if method == "GET" && uri.starts_with("/v2/") && uri.contains("/blobs/sha256:") {
                s.blob_gets += 1;
                let mut nums = rest.split(' ');
                let _status = nums.next();
                s.blob_bytes += nums.next().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        s
    }
}

/// From distribution's `response completed` lines (logrus: `time="<RFC 3339, the end>" …
/// http.request.method=GET … http.request.uri=/v2/…/blobs/sha256:… …
/// http.response.duration=7.55ms`) in `log`: the first blob GET's start (its end less its
/// duration) to the last one's end, in ms. `None` without a blob GET.
pub fn blob_span_ms(log: &str) -> Option<f64> {
    let field = |line: &str, name: &str| -> Option<String> {
        let rest = &line[line.find(&format!(" {name}="))? + name.len() + 2..];
        Some(match rest.strip_prefix('"') {
            Some(q) => q.split('"').next()?.to_string(),
            None => rest.split(' ').next()?.to_string(),
        })
    };
    let mut span: Option<(f64, f64)> = None;
    for line in log.lines().filter(|l| l.starts_with("time=\"")) {
        if field(line, "http.request.method").as_deref() != Some("GET")
            || !field(line, "http.request.uri").is_some_and(|u| u.contains("/blobs/sha256:"))
        {
            continue;
        }
        let Some(end) = line
            .strip_prefix("time=\"")
            .and_then(|t| t.split('"').next())
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| t.unix_timestamp_nanos() as f64 / 1e6)
        else {
            continue;
        };
        let Some(took) = field(line, "http.response.duration").and_then(|d| go_duration_ms(&d))
        else {
            continue;
        };
        let (a, b) = span.unwrap_or((f64::MAX, f64::MIN));
        span = Some((a.min(end - took), b.max(end)));
    }
    span.map(|(a, b)| b - a)
}

/// A Go `time.Duration` as it prints (`658.739µs`, `7.551498ms`, `1.2s`, `1m2.5s`), in ms.
fn go_duration_ms(d: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = d;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-6,
            "µs" | "us" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[u..];
    }
    Some(total)
}

/// A `docker-registry serve` process writing its log to a file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// `docker-registry serve <config>` in the namespace at `netns`, once `addr` answers `/v2/`
    /// there.
    fn start(netns: &Path, config: &Path, log: &Path, addr: SocketAddr) -> Result<Process, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns.display()))
            .args([REGISTRY, "serve"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // A test process killed outright takes its registries along (nsenter execs the registry,
        // which keeps the signal). The spawning thread holds the registry until it drops it, so
        // the thread's end (which also fires it) never comes first.
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {REGISTRY}: {e}"))?;
        let mut p = Process {
            child,
            log: log.to_path_buf(),
        };
        let ns = Netns::enter(netns).map_err(|e| format!("enter {}: {e}", netns.display()))?;
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if ns.run(get_v2(addr)).is_ok_and(|s| s == 200) {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!(
                    "{REGISTRY} exited {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            if Instant::now() > end {
                return Err(format!(
                    "{REGISTRY} did not answer on {addr} within 20 s:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn served(&self) -> Served {
        Served::of_log(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn mark(&self) -> usize {
        std::fs::metadata(&self.log)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    fn blob_span_ms(&self, since: usize) -> Option<f64> {
        let log = std::fs::read(&self.log).ok()?;
        blob_span_ms(&String::from_utf8_lossy(log.get(since..)?))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that never takes a proxy from the environment: every request stays in the namespace.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// `GET /v2/`'s status at `addr`.
async fn get_v2(addr: SocketAddr) -> Result<u16, String> {
    client()
        .get(format!("http://{addr}/v2/"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Pushes `image` to the registry at `addr` as [`REPOSITORY`]:[`TAG`] (a blob upload each:
/// `POST …/blobs/uploads/`, then `PUT <location>&digest=…`; then the manifest).
async fn push(addr: SocketAddr, image: TestImage) -> Result<(), String> {
    let c = client();
    let base = format!("http://{addr}/v2/{REPOSITORY}");
    for blob in image.layers.iter().chain([&image.config]) {
        let r = c
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await
            .map_err(|e| format!("start an upload: {e}"))?;
        if r.status().as_u16() != 202 {
            return Err(format!("start an upload: {}", r.status()));
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or("an upload without a Location")?;
        let location = if location.starts_with('/') {
            format!("http://{addr}{location}")
        } else {
            location.to_string()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = c
            .put(format!("{location}{sep}digest={}", blob.digest))
            .header("content-type", "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await
            .map_err(|e| format!("upload {}: {e}", blob.digest))?;
        if r.status().as_u16() != 201 {
            return Err(format!("upload {}: {}", blob.digest, r.status()));
        }
    }
    let r = c
        .put(format!("{base}/manifests/{TAG}"))
        .header("content-type", MANIFEST_TYPE)
        .body(image.manifest.clone())
        .send()
        .await
        .map_err(|e| format!("put the manifest: {e}"))?;
    if r.status().as_u16() != 201 {
        let text = r.text().await.unwrap_or_default();
        return Err(format!("put the manifest: {text}"));
    }
    Ok(())
}

/// Pulls `image`'s blobs from the registry at `addr` as dockerd does (the manifest by tag, then
/// every blob, at once): the bytes that came.
pub async fn pull_blobs(addr: SocketAddr, image: TestImage) -> Result<u64, String> {
    let c = client();
    let base = format!("http://{addr}/v2/{REPOSITORY}");
    let r = c
        .get(format!("{base}/manifests/{TAG}"))
        .header("accept", MANIFEST_TYPE)
        .send()
        .await
        .map_err(|e| format!("the manifest: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("the manifest: {}", r.status()));
    }
    let mut set = tokio::task::JoinSet::new();
    for blob in image.layers.iter().chain([&image.config]) {
        let (c, url) = (c.clone(), format!("{base}/blobs/{}", blob.digest));
        set.spawn(async move {
            let r = c
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !r.status().is_success() {
                return Err(format!("{url}: {}", r.status()));
            }
            r.bytes()
                .await
                .map(|b| b.len() as u64)
                .map_err(|e| format!("{url}: {e}"))
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r.map_err(|e| e.to_string())??;
    }
    Ok(total)
}

/// distribution's configuration: filesystem storage under `root`, listening on `addr`, a proxy
/// of `remote` if any. Deletion is on because proxy mode's scheduler deletes expired blobs.
fn config(service: &str, root: &Path, addr: SocketAddr, remote: Option<&str>) -> String {
    let mut c = format!(
        "version: 0.1\nlog:\n  level: info\n  fields: {{service: {service}}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: {addr}\n  secret: sysrunner-test-{service}\n",
        root.display()
    );
    if let Some(r) = remote {
        c.push_str(&format!("proxy:\n  remoteurl: {r}\n"));
    }
    c
}

/// A network namespace the kit made (`ip netns add`), deleted on drop with what is in it.
struct OwnNetns(String);

impl OwnNetns {
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for OwnNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

const UPSTREAM_PREFIX: &str = "sysrunner-regup-";

/// Namespaces of upstreams whose process is gone (a run that was killed).
fn remove_stale_upstreams() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix(UPSTREAM_PREFIX)
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// The upstream registry with the test image, in its own namespace.
pub struct Upstream {
    process: Process,
    image: TestImage,
    links: AtomicU8,
    ns: OwnNetns,
    dir: tempfile::TempDir,
}

impl Upstream {
    /// Makes the namespace, starts the registry on [`UPSTREAM_IP`]:[`PORT`] and pushes the test
    /// image to it.
    pub fn start() -> Result<Upstream, String> {
        static N: AtomicU8 = AtomicU8::new(0);
        remove_stale_upstreams();
        let name = format!(
            "{UPSTREAM_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = OwnNetns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns.0,
            "addr",
            "add",
            &format!("{UPSTREAM_IP}/32"),
            "dev",
            "lo",
        ])?;
        // A new namespace copies the host's IPv4 forwarding; the upstream's passes nothing on.
        run(Command::new("nsenter").args([
            &format!("--net={}", ns.path().display()),
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv4/ip_forward",
        ]))?;
        let dir = tempfile::Builder::new()
            .prefix("sysrunner-regup-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let addr = SocketAddr::from((UPSTREAM_IP, PORT));
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            config("upstream", &dir.path().join("data"), addr, None),
        )
        .map_err(|e| e.to_string())?;
        let process = Process::start(&ns.path(), &cfg, &dir.path().join("log"), addr)?;
        let image = TestImage::build()?;
        let netns = Netns::enter(&ns.path()).map_err(|e| e.to_string())?;
        netns.run(push(addr, image.clone()))?;
        Ok(Upstream {
            process,
            image,
            links: AtomicU8::new(0),
            ns,
            dir,
        })
    }

    /// `http://10.233.0.1:5000`
    pub fn url(&self) -> String {
        format!("http://{UPSTREAM_IP}:{PORT}")
    }

    pub fn image(&self) -> &TestImage {
        &self.image
    }

    /// What it has served so far.
    pub fn served(&self) -> Served {
        self.process.served()
    }

    /// Where its log ends now, for [`Upstream::blob_span_ms`].
    pub fn mark(&self) -> usize {
        self.process.mark()
    }

    /// The blob transfers it logged after `mark`, from the first one's start to the last one's
    /// end (ms).
    pub fn blob_span_ms(&self, mark: usize) -> Option<f64> {
        self.process.blob_span_ms(mark)
    }

    /// Its log (access lines and its own).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// Where it keeps the image (for a plain registry serving the same, see [`Cache::plain`]).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Links the namespace at `netns` (a path) to the upstream: a veth pair on 10.234.K.0/30 and
    /// a route to [`UPSTREAM_IP`] there. Neither side forwards, so only `netns` itself reaches it.
    pub fn link(&self, netns: &Path) -> Result<Link, String> {
        let k = self.links.fetch_add(1, Ordering::Relaxed);
        let up_end = format!("up{k}");
        let far_end = format!("regup{k}");
        let n = self.ns.0.as_str();
        ip(&[
            "-n",
            n,
            "link",
            "add",
            &up_end,
            "type",
            "veth",
            "peer",
            "name",
            &far_end,
            "netns",
            &netns.display().to_string(),
        ])?;
        let link = Link {
            upstream_ns: self.ns.0.clone(),
            upstream_end: up_end.clone(),
        };
        let far = |args: &[&str]| -> Result<(), String> {
            run(Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .arg("ip")
                .args(args))
            .map(|_| ())
        };
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("10.234.{k}.1/30"),
            "dev",
            &up_end,
        ])?;
        ip(&["-n", n, "link", "set", &up_end, "up"])?;
        far(&["addr", "add", &format!("10.234.{k}.2/30"), "dev", &far_end])?;
        far(&["link", "set", &far_end, "up"])?;
        far(&[
            "route",
            "add",
            &format!("{UPSTREAM_IP}/32"),
            "via",
            &format!("10.234.{k}.1"),
        ])?;
        Ok(link)
    }
}

/// A link from a namespace to the upstream; deleted on drop.
pub struct Link {
    upstream_ns: String,
    upstream_end: String,
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = ip(&["-n", &self.upstream_ns, "link", "del", &self.upstream_end]);
    }
}

/// A registry where boxes reach it: the pull-through cache of an [`Upstream`], or a plain one.
pub struct Cache {
    process: Process,
    url: String,
    _link: Option<Link>,
    _dir: tempfile::TempDir,
}

impl Cache {
    /// A pull-through cache of `upstream` with fresh (empty) storage, in the namespace at
    /// `netns`, listening on `ip`:[`PORT`]: linked to the upstream first, since distribution's
    /// proxy panics when its remote does not answer at its start.
    pub fn start(upstream: &Upstream, netns: &Path, ip: Ipv4Addr) -> Result<Cache, String> {
        let link = upstream.link(netns)?;
        let dir = tempfile::Builder::new()
            .prefix("sysrunner-regcache-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let addr = SocketAddr::from((ip, PORT));
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            config(
                "cache",
                &dir.path().join("data"),
                addr,
                Some(&upstream.url()),
            ),
        )
        .map_err(|e| e.to_string())?;
        let process = Process::start(netns, &cfg, &dir.path().join("log"), addr)?;
        Ok(Cache {
            process,
            url: format!("http://{addr}"),
            _link: Some(link),
            _dir: dir,
        })
    }

    /// A plain registry (no proxy, no upstream) serving a copy of `upstream`'s storage in the
    /// namespace at `netns`, on `ip`:`port`: the same hop as the cache without the cache's work,
    /// the physical limit of a pull through it.
    pub fn plain(
        upstream: &Upstream,
        netns: &Path,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<Cache, String> {
        let dir = tempfile::Builder::new()
            .prefix("sysrunner-regplain-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        run(Command::new("cp")
            .arg("-a")
            .arg(upstream.storage())
            .arg(dir.path().join("data")))?;
        let addr = SocketAddr::from((ip, port));
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config("plain", &dir.path().join("data"), addr, None))
            .map_err(|e| e.to_string())?;
        let process = Process::start(netns, &cfg, &dir.path().join("log"), addr)?;
        Ok(Cache {
            process,
            url: format!("http://{addr}"),
            _link: None,
            _dir: dir,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.url
            .trim_start_matches("http://")
            .parse()
            .expect("made from a SocketAddr")
    }

    /// `http://IP:5000`: what `DOCKER_REGISTRY_CACHE` is set to.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn served(&self) -> Served {
        self.process.served()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// Where its log ends now, for [`Cache::blob_span_ms`].
    pub fn mark(&self) -> usize {
        self.process.mark()
    }

    /// The blob transfers it logged after `mark`, from the first one's start to the last one's
    /// end (ms): how long the blobs of a pull took at this registry, without dockerd's own work.
    pub fn blob_span_ms(&self, mark: usize) -> Option<f64> {
        self.process.blob_span_ms(mark)
    }
}

/// A TCP listener that accepts and never answers (nor closes): a cache that hangs.
pub struct Hanging {
    ns: Netns,
    task: Option<tokio::task::AbortHandle>,
    pub url: String,
}

impl Hanging {
    /// Listens on `addr` in the namespace at `netns`.
    pub fn start(netns: &Path, addr: SocketAddr) -> Result<Hanging, String> {
        let ns = Netns::enter(netns).map_err(|e| format!("enter {}: {e}", netns.display()))?;
        let task = ns.run(async move {
            let l = tokio::net::TcpListener::bind(addr).await?;
            Ok::<_, std::io::Error>(
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((s, _)) = l.accept().await {
                        held.push(s);
                    }
                })
                .abort_handle(),
            )
        });
        let task = task.map_err(|e| format!("listen on {addr}: {e}"))?;
        Ok(Hanging {
            ns,
            task: Some(task),
            url: format!("http://{addr}"),
        })
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            self.ns.run(async move { t.abort() });
        }
    }
}

/// A TCP proxy in front of a registry that holds back the connection after [`Slow::delay_next`]
/// for a while before passing it on: a cache that answers late, once.
pub struct Slow {
    ns: Netns,
    task: Option<tokio::task::AbortHandle>,
    next: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    pub url: String,
}

impl Slow {
    /// Listens on `listen` in the namespace at `netns`, passing connections on to `target`.
    pub fn start(netns: &Path, listen: SocketAddr, target: SocketAddr) -> Result<Slow, String> {
        let ns = Netns::enter(netns).map_err(|e| format!("enter {}: {e}", netns.display()))?;
        let next = std::sync::Arc::new(std::sync::Mutex::new(None::<Duration>));
        let shared = next.clone();
        let task = ns.run(async move {
            let l = tokio::net::TcpListener::bind(listen).await?;
            Ok::<_, std::io::Error>(
                tokio::spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        let delay = shared.lock().expect("delay lock").take();
                        tokio::spawn(async move {
                            if let Some(d) = delay {
                                tokio::time::sleep(d).await;
                            }
                            if let Ok(mut t) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                            }
                        });
                    }
                })
                .abort_handle(),
            )
        });
        let task = task.map_err(|e| format!("listen on {listen}: {e}"))?;
        Ok(Slow {
            ns,
            task: Some(task),
            next,
            url: format!("http://{listen}"),
        })
    }

    /// The next connection waits `d` before it is passed on.
    pub fn delay_next(&self, d: Duration) {
        *self.next.lock().expect("delay lock") = Some(d);
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            self.ns.run(async move { t.abort() });
        }
    }
}

/// The rig's fake-GitHub namespace as a path under `/run/netns` (the namespace every box of the
/// rig routes to), found by its inode, and the address the fake listens on there.
pub fn github_netns(rig: &Rig) -> Result<(PathBuf, Ipv4Addr), String> {
    let (dev, ino) = rig
        .in_github_netns(async {
            std::fs::metadata("/proc/thread-self/ns/net").map(|m| (m.dev(), m.ino()))
        })
        .map_err(|e| format!("the fake's namespace: {e}"))?;
    let path = std::fs::read_dir("/run/netns")
        .map_err(|e| format!("/run/netns: {e}"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
        .ok_or("the fake's namespace is not under /run/netns")?;
    let url = url::Url::parse(&rig.url).map_err(|e| format!("{}: {e}", rig.url))?;
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip,
        _ => return Err(format!("the fake's URL has no IPv4 address: {}", rig.url)),
    };
    Ok((path, ip))
}

/// The default routes of the namespace at `netns`: what could carry a packet out of it. Empty
/// when nothing can (it may still forward between the links it has).
pub fn default_routes(netns: &Path) -> Result<Vec<String>, String> {
    let net = format!("--net={}", netns.display());
    let routes = run(Command::new("nsenter").args([&net, "ip", "route", "show", "default"]))?;
    Ok(String::from_utf8_lossy(&routes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect())
}

/// Whether a TCP connection from the namespace at `netns` to `addr` is made within a second.
pub fn reaches(netns: &Path, addr: SocketAddr) -> Result<bool, String> {
    let ns = Netns::enter(netns).map_err(|e| format!("enter {}: {e}", netns.display()))?;
    Ok(ns.run(async move {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await,
            Ok(Ok(_))
        )
    }))
}

/// The upstream's namespace, for [`default_routes`].
impl Upstream {
    pub fn netns(&self) -> PathBuf {
        self.ns.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_log_counts_blob_gets_and_their_bytes_only() {
        let log = r#"time="2026-12-03T08:59:58Z" level=info msg="response completed" http.request.uri=/v2/library/testimg/blobs/sha256:aa http.response.written=9
10.77.0.3 - - [03/Dec/2026:09:00:52 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "Go-http-client/1.1"
10.77.0.3 - - [03/Dec/2026:09:00:52 +0000] "HEAD /v2/library/testimg/blobs/sha256:19b3 HTTP/1.1" 200 0 "" "Go-http-client/1.1"
10.77.0.3 - - [03/Dec/2026:09:00:52 +0000] "GET /v2/library/testimg/blobs/sha256:19b3 HTTP/1.1" 200 1048576 "" "Go-http-client/1.1"
10.77.0.3 - - [03/Dec/2026:09:00:52 +0000] "GET /v2/library/testimg/blobs/sha256:9a9f HTTP/1.1" 200 300 "" "docker/26.1.5 UpstreamClient(Docker-Client/26.1.5 \\(linux\\))"
10.77.0.3 - - [03/Dec/2026:09:00:52 +0000] "GET /v2/library/testimg/manifests/1 HTTP/1.1" 200 1161 "" "Go-http-client/1.1"
10.77.0.3 - - [03/Dec/2026:09:00:52 +0000] "HEAD /v2/library/testimg/manifests/1 HTTP/1.1" 200 1161 "" "Go-http-client/1.1"
"#;
        let s = Served::of_log(log);
        assert_eq!(
            s,
            Served {
                blob_gets: 2,
                blob_bytes: 1_048_876,
                manifest_gets: 1,
                requests: 6
            }
        );
        assert_eq!(s - s, Served::default());
    }

    #[test]
    fn the_blob_span_runs_from_the_first_blob_start_to_the_last_end() {
        let log = r#"time="2026-12-03T09:00:41.000000000Z" level=info msg="response completed" http.request.method=GET http.request.uri=/v2/library/testimg/blobs/sha256:aa http.request.useragent="docker/26 (linux)" http.response.duration=100ms http.response.status=200
time="2026-12-03T09:00:41.050000000Z" level=info msg="response completed" http.request.method=GET http.request.uri=/v2/library/testimg/blobs/sha256:bb http.response.duration="500µs" http.response.status=200
time="2026-12-03T09:00:41.300000000Z" level=info msg="response completed" http.request.method=GET http.request.uri=/v2/library/testimg/manifests/1 http.response.duration=1.5s http.response.status=200
time="2026-12-03T09:00:41.200000000Z" level=info msg="response completed" http.request.method=HEAD http.request.uri=/v2/library/testimg/blobs/sha256:cc http.response.duration=1s http.response.status=200
10.77.0.3 - - [03/Dec/2026:09:00:52 +0000] "GET /v2/library/testimg/blobs/sha256:19b3 HTTP/1.1" 200 1048576 "" "Go-http-client/1.1"
"#;
        let span = blob_span_ms(log).unwrap();
        assert!((span - 150.0).abs() < 1e-2, "{span}");
        assert_eq!(blob_span_ms("no blobs here"), None);
        assert_eq!(go_duration_ms("1m2.5s"), Some(62_500.0));
        assert!((go_duration_ms("658.739µs").unwrap() - 0.658739).abs() < 1e-9);
        assert_eq!(go_duration_ms("7ms"), Some(7.0));
        assert_eq!(go_duration_ms("7parsecs"), None);
    }

    #[test]
    fn the_configuration_is_a_proxy_only_when_given_a_remote() {
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), PORT));
        let plain = config("upstream", Path::new("/d"), addr, None);
        assert!(plain.contains("addr: 10.0.0.1:5000"), "{plain}");
        assert!(plain.contains("rootdirectory: /d"), "{plain}");
        assert!(!plain.contains("proxy"), "{plain}");
        let cache = config(
            "cache",
            Path::new("/d"),
            addr,
            Some("http://10.233.0.1:5000"),
        );
        assert!(
            cache.ends_with("proxy:\n  remoteurl: http://10.233.0.1:5000\n"),
            "{cache}"
        );
    }
}
