//! `tocsin-bridge check`: validates the config, the policy's routing rules and a folder of CAP
//! files, and says where each alert would go. Posts nothing, connects to nothing.

use std::path::Path;

use crate::cap;
use crate::config::Config;

/// The result of one check, as lines to print, and whether everything was valid.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub lines: Vec<String>,
    pub errors: usize,
}

impl CheckReport {
    fn ok(&mut self, line: String) {
        self.lines.push(line);
    }

    fn bad(&mut self, line: String) {
        self.errors += 1;
        self.lines.push(line);
    }
}

/// Checks `config` (if given; it names the policy), or a `policy` directly, and the CAP files
/// in `cap_dir` (if given).
pub fn check(config: Option<&Path>, policy: Option<&Path>, cap_dir: Option<&Path>) -> CheckReport {
    let mut report = CheckReport::default();
    let mut policy_path = policy.map(Path::to_path_buf);
    if let Some(path) = config {
        match Config::read(path) {
            Ok(c) => {
                report.ok(format!("{}: ok ({} sources)", path.display(), c.sources.len()));
                policy_path.get_or_insert(c.policy);
            }
            Err(e) => report.bad(e.to_string()),
        }
    }
    let mut routes = Vec::new();
    if let Some(p) = &policy_path {
        match tocsin_policies::read_node_policy(p) {
            Ok(parsed) => {
                for w in parsed.warnings.0.iter() {
                    report.ok(w.to_string());
                }
                let b = &parsed.policy.bridge;
                report.ok(format!(
                    "{}: ok (bridge bot {}, {} routes)",
                    p.display(),
                    b.bot.as_deref().unwrap_or("not set"),
                    b.routes.len()
                ));
                routes = b.routes.clone();
            }
            Err(tocsin_policies::PolicyError::Invalid(diags)) => {
                for d in diags.0.iter() {
                    report.bad(d.to_string());
                }
            }
            Err(e) => report.bad(e.to_string()),
        }
    }
    if let Some(dir) = cap_dir {
        check_caps(dir, &routes, &mut report);
    }
    report
}

fn check_caps(dir: &Path, routes: &[tocsin_policies::BridgeRoute], report: &mut CheckReport) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return report.bad(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    for file in files {
        let name = file.display();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                report.bad(format!("{name}: {e}"));
                continue;
            }
        };
        match cap::parse(&text) {
            Ok(alert) => {
                let rooms = crate::route::rooms_for(routes, &alert);
                let to = if rooms.is_empty() { "no room".to_owned() } else { rooms.join(", ") };
                report.ok(format!("{name}: ok: {} {} ({}) → {to}", alert.status, alert.msg_type, alert.identifier));
            }
            Err(e) => report.bad(format!("{name}: {e}")),
        }
    }
}
