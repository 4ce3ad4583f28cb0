//! The deployment files, checked offline. `kubectl kustomize` renders each overlay of `k8s/`;
//! every object must parse into the Kubernetes API types (k8s-openapi) with no field left
//! over (a misspelt field fails here, not in a cluster), and the fields the roles rely on
//! must agree: the role subcommand and its flags (each one a flag `oxrl <role> --help`
//! lists), ports, gRPC probes, the token Secret and run config mounted where the flags
//! point, the learner's run directory on its volume claim, its advertised DNS name, PDB
//! selectors, GPUs. (The Dockerfiles are checked in `dockerfiles.rs`.)
//!
//! Needs `kubectl` with kustomize v5 (`.ci/run` installs it when missing); without one the
//! manifest test says so on stderr and passes.

mod common;

use common::flag_value;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, PodSpec, PodTemplateSpec, Probe, Secret, Service,
    Volume,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const OVERLAYS: [&str; 2] = ["cpu", "gpu"];
const COORDINATOR_URL: &str = "http://oxrl-coordinator:7000";
const GPU: &str = "nvidia.com/gpu";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Why the manifests cannot be rendered here, if they cannot: no `kubectl`, or one whose
/// built-in kustomize is older than v5.
fn kubectl_missing() -> Option<String> {
    let out = match Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    {
        Ok(out) => out,
        Err(e) => return Some(format!("kubectl not found ({e})")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    match major {
        Some(m) if m >= 5 => None,
        _ => Some(format!(
            "kubectl has no kustomize v5 (`kubectl version --client` said: {})",
            text.trim()
        )),
    }
}

/// Printed past the test harness's capture, so that a skip shows in CI's log.
fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED tests/k8s_manifests.rs: {why}; install kubectl (with kustomize v5) to check k8s/"
    );
}

/// The objects of one rendered overlay, by kind and name.
#[derive(Default)]
struct Rendered {
    overlay: &'static str,
    deployments: BTreeMap<String, Deployment>,
    stateful_sets: BTreeMap<String, StatefulSet>,
    services: BTreeMap<String, Service>,
    config_maps: BTreeMap<String, ConfigMap>,
    secrets: BTreeMap<String, Secret>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    pdbs: BTreeMap<String, PodDisruptionBudget>,
}

fn render(overlay: &'static str) -> Rendered {
    let dir = repo().join("k8s/overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    let mut r = Rendered {
        overlay,
        ..Rendered::default()
    };
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_json::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{overlay}: a document is not YAML: {e}"));
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{overlay}: a {kind} without a name"))
            .to_string();
        let at = format!("{overlay}: {kind} {name}");
        match kind.as_str() {
            "Deployment" => insert(&mut r.deployments, name, strict(v, &at)),
            "StatefulSet" => insert(&mut r.stateful_sets, name, strict(v, &at)),
            "Service" => insert(&mut r.services, name, strict(v, &at)),
            "ConfigMap" => insert(&mut r.config_maps, name, strict(v, &at)),
            "Secret" => insert(&mut r.secrets, name, strict(v, &at)),
            "PersistentVolumeClaim" => insert(&mut r.claims, name, strict(v, &at)),
            "PodDisruptionBudget" => insert(&mut r.pdbs, name, strict(v, &at)),
            other => panic!("{at}: this test does not know the kind {other:?}; add it"),
        }
    }
    r
}

fn insert<T>(map: &mut BTreeMap<String, T>, name: String, value: T) {
    assert!(
        map.insert(name.clone(), value).is_none(),
        "{name} appears twice"
    );
}

/// Parses an object into its API type and checks that serialising it back gives the same
/// document: a field the API does not have (a typo, a wrong level) would be dropped.
fn strict<T: DeserializeOwned + Serialize>(v: serde_json::Value, at: &str) -> T {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{at}: not a valid object: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    diff("", &v, &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{at}: fields the Kubernetes API does not know, or values it reads differently:\n  {}",
        diffs.join("\n  ")
    );
    typed
}

fn diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::{Array, Object};
    match (a, b) {
        (Object(x), Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => diff(&format!("{path}.{k}"), va, vb, out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Array(x), Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} read as {b}")),
    }
}

/// The `--flag`s `oxrl <role> --help` lists.
fn help_flags(role: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args([role, "--help"])
        .output()
        .expect("running oxrl");
    assert!(out.status.success(), "oxrl {role} --help failed");
    flags(String::from_utf8_lossy(&out.stdout).split_whitespace())
}

fn flags<'a>(words: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    words
        .into_iter()
        .filter_map(|w| {
            let name: String = w
                .strip_prefix("--")?
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

fn port_of(addr: &str, at: &str) -> i32 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{at}: no port in {addr:?}"))
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// One role as the manifests run it.
struct Role<'a> {
    role: &'static str,
    at: String,
    template: &'a PodTemplateSpec,
    selector: BTreeMap<String, String>,
}

impl<'a> Role<'a> {
    fn spec(&self) -> &'a PodSpec {
        self.template.spec.as_ref().expect("pod spec")
    }
    fn labels(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }
    fn container(&self) -> &'a Container {
        let containers = &self.spec().containers;
        assert_eq!(containers.len(), 1, "{}: one container per pod", self.at);
        assert_eq!(containers[0].name, self.role, "{}", self.at);
        &containers[0]
    }
    fn args(&self) -> &'a [String] {
        self.container().args.as_deref().unwrap_or_default()
    }
    fn value(&self, flag: &str) -> &'a str {
        flag_value(self.args(), flag, &self.at)
    }
    fn volume(&self, name: &str) -> &'a Volume {
        self.spec()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{}: no volume {name}", self.at))
    }
    /// The volume mounted at the directory that holds `path`, and the file's name in it.
    fn mount_holding(&self, path: &str) -> (String, String) {
        let (dir, file) = path
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("{}: {path} is not absolute", self.at));
        let mount = self
            .container()
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == dir)
            .unwrap_or_else(|| panic!("{}: nothing is mounted at {dir} (for {path})", self.at));
        (mount.name.clone(), file.to_string())
    }
    fn container_port(&self, port: i32) {
        let ports: Vec<i32> = self
            .container()
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert!(
            ports.contains(&port),
            "{}: port {port} not declared ({ports:?})",
            self.at
        );
    }
    fn named_port(&self, port: &IntOrString) -> i32 {
        match port {
            IntOrString::Int(p) => *p,
            IntOrString::String(name) => {
                self.container()
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .unwrap_or_else(|| panic!("{}: no port named {name}", self.at))
                    .container_port
            }
        }
    }
    fn probes(&self) -> [(&'static str, &'a Probe); 3] {
        let c = self.container();
        let get = |p: &'a Option<Probe>, what| {
            p.as_ref()
                .unwrap_or_else(|| panic!("{}: no {what} probe", self.at))
        };
        [
            ("startup", get(&c.startup_probe, "startup")),
            ("readiness", get(&c.readiness_probe, "readiness")),
            ("liveness", get(&c.liveness_probe, "liveness")),
        ]
    }
    fn gpus(&self) -> Option<(String, String)> {
        let res = self.container().resources.as_ref()?;
        let get = |m: &Option<BTreeMap<String, _>>| {
            m.as_ref()
                .and_then(|m| m.get(GPU))
                .map(|q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| q.0.clone())
        };
        match (get(&res.requests), get(&res.limits)) {
            (None, None) => None,
            (Some(r), Some(l)) => Some((r, l)),
            other => panic!(
                "{}: {GPU} in only one of requests/limits: {other:?}",
                self.at
            ),
        }
    }
}

fn roles(r: &Rendered) -> [Role<'_>; 3] {
    let deployment = |role: &'static str| {
        let name = format!("oxrl-{role}");
        let d = r
            .deployments
            .get(&name)
            .unwrap_or_else(|| panic!("{}: no Deployment {name}", r.overlay));
        let spec = d.spec.as_ref().expect("deployment spec");
        Role {
            role,
            at: format!("{}: Deployment {name}", r.overlay),
            template: &spec.template,
            selector: spec.selector.match_labels.clone().unwrap_or_default(),
        }
    };
    let s = r
        .stateful_sets
        .get("oxrl-learner")
        .unwrap_or_else(|| panic!("{}: no StatefulSet oxrl-learner", r.overlay));
    let spec = s.spec.as_ref().expect("statefulset spec");
    let learner = Role {
        role: "learner",
        at: format!("{}: StatefulSet oxrl-learner", r.overlay),
        template: &spec.template,
        selector: spec.selector.match_labels.clone().unwrap_or_default(),
    };
    [deployment("coordinator"), learner, deployment("actor")]
}

/// Checks one rendered overlay; `help` holds each role's `--help` flags.
fn check(r: &Rendered, help: &HashMap<&str, BTreeSet<String>>) {
    let roles = roles(r);
    for x in &roles {
        check_role(r, x, &roles, &help[x.role]);
    }
    assert_eq!(r.pdbs.len(), roles.len(), "{}: one PDB per role", r.overlay);
    let [coordinator, learner, actor] = &roles;
    check_coordinator(r, coordinator);
    check_learner(r, learner);
    check_actor(r, actor);
    check_gpus(r, learner, actor);
}

/// What every role needs: its subcommand and known flags, the image's entry point, the
/// token from the Secret, metrics scraped on its own port, resources, non-root, one PDB.
fn check_role(r: &Rendered, x: &Role, roles: &[Role], help: &BTreeSet<String>) {
    let secret = only(&r.secrets, "Secret", r.overlay);
    let image = roles[0].container().image.clone();
    let at = &x.at;
    let labels = x.labels();
    assert!(
        labels_match(&x.selector, &labels),
        "{at}: selector {:?} misses the pod labels {labels:?}",
        x.selector
    );
    let c = x.container();
    assert_eq!(c.image, image, "{at}: every role runs the same image");
    assert!(
        c.command.is_none(),
        "{at}: command overrides the image's ENTRYPOINT [\"oxrl\"]"
    );
    let args = x.args();
    assert_eq!(
        args.first().map(String::as_str),
        Some(x.role),
        "{at}: args start with the role subcommand"
    );
    let used = flags(args.iter().map(String::as_str));
    assert!(
        !used.contains("--exit-with-parent"),
        "{at}: --exit-with-parent would stop the role when its stdin closes"
    );
    let unknown: Vec<_> = used.difference(help).collect();
    assert!(
        unknown.is_empty(),
        "{at}: `oxrl {}` has no flags {unknown:?} (its --help lists {help:?})",
        x.role
    );

    // Every role: the token from the Secret, metrics scraped on its own port.
    let (volume, key) = x.mount_holding(x.value("--auth-token-file"));
    let source = x
        .volume(&volume)
        .secret
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: the token volume is not a Secret"));
    assert_eq!(
        source.secret_name.as_deref(),
        secret.metadata.name.as_deref(),
        "{at}: the token volume names the generated Secret"
    );
    assert!(
        secret.data.as_ref().is_some_and(|d| d.contains_key(&key)),
        "{at}: the Secret has no key {key}"
    );
    if x.role != "coordinator" {
        assert_eq!(x.value("--coordinator"), COORDINATOR_URL, "{at}");
    }
    let metrics = port_of(x.value("--metrics-listen"), at);
    let expected = match x.role {
        "coordinator" => 9000,
        "learner" => 9001,
        _ => 9002,
    };
    assert_eq!(metrics, expected, "{at}: the contract's metrics port");
    x.container_port(metrics);
    let notes = x
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    assert_eq!(
        notes.get("prometheus.io/scrape").map(String::as_str),
        Some("true"),
        "{at}"
    );
    assert_eq!(
        notes.get("prometheus.io/port"),
        Some(&metrics.to_string()),
        "{at}: scraped on the metrics port"
    );
    assert_eq!(
        notes.get("prometheus.io/path").map(String::as_str),
        Some("/metrics"),
        "{at}"
    );

    // Pods: resources, non-root, no service-link variables in oxrl's OXRL_* namespace.
    let res = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: no resources"));
    for (what, m) in [("requests", &res.requests), ("limits", &res.limits)] {
        let m = m
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: no resource {what}"));
        assert!(
            m.contains_key("cpu") && m.contains_key("memory"),
            "{at}: {what} need cpu and memory"
        );
    }
    let spec = x.spec();
    assert_eq!(
        spec.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true),
        "{at}"
    );
    assert_eq!(
        spec.enable_service_links,
        Some(false),
        "{at}: service links would set OXRL_*_PORT variables"
    );

    // Exactly one PDB covers the role, and it selects no other role's pods.
    let covering: Vec<_> = r
        .pdbs
        .iter()
        .filter(|(_, p)| {
            let sel = p
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| s.match_labels.clone())
                .unwrap_or_default();
            labels_match(&sel, &labels)
        })
        .collect();
    assert_eq!(
        covering.len(),
        1,
        "{at}: one PodDisruptionBudget should select its pods"
    );
    let sel = covering[0]
        .1
        .spec
        .as_ref()
        .unwrap()
        .selector
        .as_ref()
        .unwrap()
        .match_labels
        .clone()
        .unwrap();
    for other in roles.iter().filter(|o| o.role != x.role) {
        assert!(
            !labels_match(&sel, &other.labels()),
            "{at}: PDB {} also selects {}",
            covering[0].0,
            other.role
        );
    }
}

/// Coordinator: gRPC 7000 behind the Service the others dial, the run config, the journal.
fn check_coordinator(r: &Rendered, coordinator: &Role) {
    let at = &coordinator.at;
    assert_eq!(port_of(coordinator.value("--listen"), at), 7000);
    coordinator.container_port(7000);
    grpc_probes(coordinator, 7000, "oxrl.v1.Coordinator");
    let svc = r
        .services
        .get("oxrl-coordinator")
        .unwrap_or_else(|| panic!("{}: no Service oxrl-coordinator", r.overlay));
    service_routes(svc, coordinator, &[7000, 9000]);
    let (volume, file) = coordinator.mount_holding(coordinator.value("--config"));
    let cm_name = coordinator
        .volume(&volume)
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: --config is not on a ConfigMap"))
        .name
        .clone();
    let cm = r
        .config_maps
        .get(&cm_name)
        .unwrap_or_else(|| panic!("{at}: ConfigMap {cm_name} is not rendered"));
    let toml_text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(&file))
        .unwrap_or_else(|| panic!("{at}: ConfigMap {cm_name} has no {file}"));
    let cfg: rollout::config::RunConfig = toml::from_str(toml_text)
        .unwrap_or_else(|e| panic!("{at}: {file} is not a run config: {e}"));
    if let Err(e) = cfg.validate() {
        panic!("{at}: the run config is not one the coordinator accepts: {e}");
    }
    let (volume, _) = coordinator.mount_holding(coordinator.value("--journal"));
    let claim = coordinator
        .volume(&volume)
        .persistent_volume_claim
        .as_ref()
        .unwrap_or_else(|| panic!("{at}: the journal is not on a volume claim"))
        .claim_name
        .clone();
    assert!(
        r.claims.contains_key(&claim),
        "{at}: PersistentVolumeClaim {claim} is not rendered"
    );
}

/// Learner: gRPC 7001, advertised under the headless Service, its run directory on its claim.
fn check_learner(r: &Rendered, learner: &Role) {
    let at = &learner.at;
    assert_eq!(port_of(learner.value("--listen"), at), 7001);
    learner.container_port(7001);
    grpc_probes(learner, 7001, "oxrl.v1.Learner");
    let sts = &r.stateful_sets["oxrl-learner"];
    let sts_spec = sts.spec.as_ref().unwrap();
    assert_eq!(sts_spec.replicas, Some(1), "{at}: one learner per run");
    let headless = sts_spec
        .service_name
        .clone()
        .unwrap_or_else(|| panic!("{at}: no serviceName"));
    assert_eq!(
        learner.value("--advertise"),
        format!("http://oxrl-learner-0.{headless}:7001"),
        "{at}: the pod's stable DNS name"
    );
    let svc = r
        .services
        .get(&headless)
        .unwrap_or_else(|| panic!("{at}: no Service {headless}"));
    let svc_spec = svc.spec.as_ref().unwrap();
    assert_eq!(
        svc_spec.cluster_ip.as_deref(),
        Some("None"),
        "{at}: {headless} must be headless"
    );
    assert_eq!(
        svc_spec.publish_not_ready_addresses,
        Some(true),
        "{at}: the name must resolve before the learner is ready"
    );
    service_routes(svc, learner, &[7001, 9001]);
    let out = learner.value("--out");
    let templates: Vec<&str> = sts_spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.as_deref())
        .collect();
    let on_claim =
        learner.container().volume_mounts.iter().flatten().any(|m| {
            templates.contains(&m.name.as_str()) && Path::new(out).starts_with(&m.mount_path)
        });
    assert!(
        on_claim,
        "{at}: --out {out} is not under a volumeClaimTemplate's mount ({templates:?})"
    );
}

/// Actors: a replica count to scale from; HTTP probes on the metrics port's open `/healthz`.
fn check_actor(r: &Rendered, actor: &Role) {
    let at = &actor.at;
    let replicas = r.deployments["oxrl-actor"].spec.as_ref().unwrap().replicas;
    assert!(
        replicas.is_some_and(|n| n >= 1),
        "{at}: replicas should be set"
    );
    for (what, p) in actor.probes() {
        let get = p
            .http_get
            .as_ref()
            .unwrap_or_else(|| panic!("{at}: the {what} probe is not HTTP"));
        // /healthz: the one path of the token-guarded metrics port that probes may use.
        assert_eq!(get.path.as_deref(), Some("/healthz"), "{at}: {what} probe");
        assert_eq!(actor.named_port(&get.port), 9002, "{at}: {what} probe");
    }
}

/// GPUs: only in the gpu overlay, on the learner (as many as `--gpus`) and the actors.
fn check_gpus(r: &Rendered, learner: &Role, actor: &Role) {
    let image = learner.container().image.clone();
    let gpu = r.overlay == "gpu";
    assert_eq!(
        image.as_deref().is_some_and(|i| i.contains("cuda")),
        gpu,
        "{}: image {image:?}",
        r.overlay
    );
    for x in [learner, actor] {
        let spec = x.spec();
        let tolerates = spec
            .tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some(GPU));
        match x.gpus() {
            Some((req, lim)) => {
                assert!(gpu, "{}: {GPU} outside the gpu overlay", x.at);
                assert_eq!(req, lim, "{}", x.at);
                assert!(
                    lim.parse::<u32>().is_ok_and(|n| n >= 1),
                    "{}: {GPU} = {lim}",
                    x.at
                );
                assert!(tolerates, "{}: no toleration for {GPU}", x.at);
                assert!(
                    spec.node_selector.is_some(),
                    "{}: no nodeSelector for GPU nodes",
                    x.at
                );
            }
            None => assert!(!gpu, "{}: no {GPU} in the gpu overlay", x.at),
        }
    }
    let has_gpus_flag = learner.args().iter().any(|a| a == "--gpus");
    assert_eq!(has_gpus_flag, gpu, "{}: --gpus", learner.at);
    if gpu {
        let (_, limit) = learner.gpus().unwrap();
        assert_eq!(
            learner.value("--gpus"),
            limit,
            "{}: --gpus N must equal the {GPU} limit",
            learner.at
        );
    }
}

fn only<'a, T>(map: &'a BTreeMap<String, T>, kind: &str, overlay: &str) -> &'a T {
    assert_eq!(
        map.len(),
        1,
        "{overlay}: expected one {kind}, got {:?}",
        map.keys().collect::<Vec<_>>()
    );
    map.values().next().unwrap()
}

fn grpc_probes(x: &Role, port: i32, service: &str) {
    for (what, p) in x.probes() {
        let grpc = p
            .grpc
            .as_ref()
            .unwrap_or_else(|| panic!("{}: the {what} probe is not gRPC", x.at));
        assert_eq!(grpc.port, port, "{}: {what} probe port", x.at);
        assert_eq!(
            grpc.service.as_deref(),
            Some(service),
            "{}: {what} probe service",
            x.at
        );
    }
}

/// The Service selects the role's pods and exposes `ports`, each reaching a container port
/// of the same number.
fn service_routes(svc: &Service, x: &Role, ports: &[i32]) {
    let at = format!(
        "{} (Service {})",
        x.at,
        svc.metadata.name.as_deref().unwrap_or_default()
    );
    let spec = svc.spec.as_ref().unwrap();
    let selector = spec.selector.clone().unwrap_or_default();
    assert!(
        labels_match(&selector, &x.labels()),
        "{at}: selector {selector:?} misses the pods"
    );
    for &port in ports {
        let p = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == port)
            .unwrap_or_else(|| panic!("{at}: no port {port}"));
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(port));
        assert_eq!(
            x.named_port(&target),
            port,
            "{at}: port {port} targets {target:?}"
        );
    }
}

#[test]
fn overlays_render_to_valid_objects_that_agree_with_the_cli() {
    if let Some(why) = kubectl_missing() {
        return skip(&why);
    }
    let help: HashMap<&str, BTreeSet<String>> = ["coordinator", "learner", "actor"]
        .into_iter()
        .map(|role| (role, help_flags(role)))
        .collect();
    for overlay in OVERLAYS {
        check(&render(overlay), &help);
    }
}

#[test]
fn base_run_config_parses() {
    let cfg: rollout::config::RunConfig =
        toml::from_str(&read("k8s/base/run.toml")).expect("k8s/base/run.toml is a RunConfig");
    cfg.validate()
        .expect("k8s/base/run.toml is a config the coordinator accepts");
    assert_eq!(
        cfg.model, "default",
        "the image ships the default model only"
    );
}

/// The `[pipeline]` defaults keep the relations docs/scaling.md sizes the coordinator by:
/// about one heartbeat a second per actor (most of its RPCs), several missed beats before
/// an actor is declared dead, leases that outlive a dead actor's notice, and Lease +
/// Complete a small part of an RPC per group.
#[test]
fn base_pipeline_defaults_follow_the_scaling_figures() {
    let cfg: rollout::config::RunConfig = toml::from_str(&read("k8s/base/run.toml")).unwrap();
    let p = &cfg.pipeline;
    assert!(
        p.heartbeat_interval_ms >= 1000,
        "heartbeats are most of the coordinator's RPCs: keep them at most one a second per actor"
    );
    assert!(
        p.actor_timeout_s * 1000.0 >= 10.0 * p.heartbeat_interval_ms as f64,
        "declare an actor dead only after 10 missed heartbeats or more"
    );
    assert!(
        p.lease_timeout_s >= 2.0 * p.actor_timeout_s,
        "a lease should outlive the notice of its holder's death"
    );
    assert!(
        p.prompts_per_lease >= 8,
        "Lease and Complete should stay a small part of the RPCs per group"
    );
    for file in ["k8s/base/run.toml", "k8s/base/coordinator.yaml"] {
        assert!(
            read(file).contains("docs/scaling.md"),
            "{file} says where its sizes come from"
        );
    }
    assert!(repo().join("docs/scaling.md").exists());
}
