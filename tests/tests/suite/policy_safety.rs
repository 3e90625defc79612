//! A policy written for another server is refused, at start and by `policy check --config`,
//! which checks what the config names.

use std::path::PathBuf;

use crate::common;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples").join(name)
}

fn write_config(dir: &std::path::Path, server_name: &str) -> PathBuf {
    let path = dir.join(format!("{server_name}.toml").replace(':', "_"));
    let text = format!(
        "server_name = \"{server_name}\"\ndata_dir = \"{}\"\npolicy = \"{}\"\nfederation_list = \"{}\"\nfederation_operator_keys = [\"{}\"]\n",
        dir.join("data").display(),
        example("riverton.toml").display(),
        example("federation.toml").display(),
        example("operator.pub").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_policy_for_another_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), "lakeside:8449");
    config.policy = Some(example("riverton.toml"));
    let error = tocsin_node::Node::start(config).await.err().expect("the node refuses to start").to_string();
    assert!(error.contains("written for server riverton:8448") && error.contains("lakeside:8449"), "{error}");

    // `policy check --config` checks what the config names: the wrong server fails, the right
    // one passes and names the files it checked.
    let check = |config: PathBuf| {
        std::process::Command::new(common::tocsin_node_binary())
            .arg("--config")
            .arg(config)
            .args(["policy", "check"])
            .output()
            .expect("tocsin-node runs")
    };
    let wrong = check(write_config(dir.path(), "lakeside:8449"));
    let out = String::from_utf8_lossy(&wrong.stdout);
    assert_eq!(wrong.status.code(), Some(1), "wrong server: {out}");
    assert!(out.contains("written for server riverton:8448"), "{out}");
    let right = check(write_config(dir.path(), "riverton:8448"));
    let out = String::from_utf8_lossy(&right.stdout);
    assert!(right.status.success(), "right server: {out}{}", String::from_utf8_lossy(&right.stderr));
    assert!(out.contains("checked 2 files (1 federation list, 1 node policy file)"), "both files checked: {out}");
}
