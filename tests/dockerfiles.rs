//! The Dockerfiles, checked statically (no Docker engine is needed): each builds a binary
//! target and features that exist and runs it as the entry point as the uid `k8s/` runs as;
//! the default model is compiled into the binary, so the runtime stage carries no model
//! files; `.dockerignore` keeps the build context small without dropping the model the build
//! compiles in.

mod common;

use common::flag_value;
use std::collections::BTreeSet;
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// One Dockerfile's build stage and final stage, as lines with continuations joined.
struct Dockerfile {
    name: &'static str,
    builder: Vec<String>,
    runtime: Vec<String>,
}

fn dockerfile(name: &'static str) -> Dockerfile {
    let text = read(name).replace("\\\n", " ");
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(
        froms.len() >= 2,
        "{name}: a builder stage and a runtime stage"
    );
    Dockerfile {
        name,
        builder: lines[froms[0]..froms[1]].to_vec(),
        runtime: lines[*froms.last().unwrap()..].to_vec(),
    }
}

fn cargo_build_args(d: &Dockerfile) -> Vec<String> {
    let line = d
        .builder
        .iter()
        .find(|l| l.contains("cargo build"))
        .unwrap_or_else(|| panic!("{}: no cargo build", d.name));
    let cmd = &line[line.find("cargo build").unwrap()..];
    let cmd = cmd.split("&&").next().unwrap();
    cmd.split_whitespace().skip(2).map(String::from).collect()
}

#[test]
fn dockerfiles_build_the_oxrl_binary_with_features_that_exist() {
    let cargo: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let package = cargo["package"]["name"].as_str().unwrap();
    let bins: Vec<String> = cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .map(|b| {
            b.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let features: BTreeSet<String> = cargo
        .get("features")
        .and_then(|f| f.as_table())
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default();
    // The default model is compiled into the binary: the image needs no model files.
    let embedded = read("policy/src/default_model.rs");
    assert!(
        embedded.contains("include_bytes!"),
        "policy/src/default_model.rs no longer compiles the default model in: the Dockerfiles' \
         runtime stage would need the model files again"
    );

    for (name, want_features) in [
        ("Dockerfile", &[][..]),
        ("Dockerfile.cuda", &["cuda", "nccl"][..]),
    ] {
        let d = dockerfile(name);
        let args = cargo_build_args(&d);
        assert!(
            args.iter().any(|a| a == "--release"),
            "{name}: a release build"
        );
        assert!(
            args.iter().any(|a| a == "--locked"),
            "{name}: the build uses Cargo.lock as it is"
        );
        let bin = flag_value(&args, "--bin", name);
        let is_bin = bins.iter().any(|b| b == bin)
            || (bin == package && repo().join("src/main.rs").exists());
        assert!(
            is_bin,
            "{name}: --bin {bin} is not a binary target of Cargo.toml"
        );
        let asked: Vec<&str> = match args.iter().position(|a| a == "--features") {
            Some(i) => args[i + 1].split(',').collect(),
            None => Vec::new(),
        };
        assert_eq!(asked, want_features, "{name}: --features");
        for f in asked {
            assert!(
                features.contains(f),
                "{name}: feature {f} is not in Cargo.toml's [features] ({features:?})"
            );
        }
        let copied = d.runtime.iter().any(|l| {
            l.starts_with("COPY --from=") && l.ends_with(&format!("/usr/local/bin/{bin}"))
        });
        assert!(
            copied,
            "{name}: the runtime stage copies the {bin} binary onto the PATH"
        );
        assert!(
            d.runtime.contains(&format!("ENTRYPOINT [\"{bin}\"]")),
            "{name}: ENTRYPOINT [\"{bin}\"]"
        );
        let user = d
            .runtime
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{name}: no USER"));
        let uid = user.split(':').next().unwrap();
        assert!(uid != "root" && uid != "0", "{name}: runs as root");
        // The manifests' runAsUser must be able to read the image's files: the same uid.
        assert_eq!(uid, "10001", "{name}: the uid k8s/ runs as (runAsUser)");

        assert!(
            !d.runtime.iter().any(|l| l.contains("default-policy")),
            "{name}: the runtime stage copies model files the binary already holds"
        );
    }

    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for must in [".git", "target/", "runs/"] {
        assert!(ignored.contains(&must), ".dockerignore should list {must}");
    }
    assert!(
        !ignored.iter().any(|l| l.starts_with("assets")),
        ".dockerignore must keep assets/ (the default model)"
    );
    assert!(
        repo().join("Cargo.lock").exists(),
        "cargo build --locked needs Cargo.lock"
    );
}
