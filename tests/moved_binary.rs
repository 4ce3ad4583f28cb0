//! The binary carries its model: a copy of `oxrl` in another directory, run from yet another
//! working directory with the source tree out of reach, trains the embedded default.

use std::process::Command;

#[test]
fn a_copied_binary_runs_the_default_from_another_directory() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = dir.path().join("bin");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let copied = bin_dir.join("oxrl");
    std::fs::copy(env!("CARGO_BIN_EXE_oxrl"), &copied).unwrap();
    // The source tree's model directory is not a path the binary could open at run time.
    let bytes = std::fs::read(&copied).unwrap();
    let assets = format!("{}/assets/default-policy", env!("CARGO_MANIFEST_DIR"));
    assert!(
        !bytes.windows(assets.len()).any(|w| w == assets.as_bytes())
            && !bytes
                .windows(b"/../assets/default-policy".len())
                .any(|w| w == b"/../assets/default-policy"),
        "the binary names the source tree's assets directory: the model is read from disk"
    );

    let out = Command::new(&copied)
        .current_dir(&work)
        // Nothing may lead the binary back to the source tree it was built from.
        .env_remove("CARGO_MANIFEST_DIR")
        .args([
            "run",
            "--sync",
            "--steps",
            "1",
            "--prompts-per-step",
            "4",
            "--group-size",
            "4",
            "--eval-n",
            "8",
            "--out",
            "run",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the copied binary failed:\n{stderr}");
    let final_dir = work.join("run/final");
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(
            final_dir.join(file).is_file(),
            "{file} missing from {}",
            final_dir.display()
        );
    }
    // The model it trained is the embedded default: the same config as the source tree's.
    let written = std::fs::read_to_string(final_dir.join("config.json")).unwrap();
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("assets/default-policy/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let written: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(written["hidden_size"], shipped["hidden_size"]);
    assert_eq!(written["num_hidden_layers"], shipped["num_hidden_layers"]);
}
