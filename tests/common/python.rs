//! The Python reference interpreter (transformers, pandas, pyarrow).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `PREPD_PYTHON`, else the virtualenv `scripts/python-env.sh` makes (once).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(python) = std::env::var("PREPD_PYTHON") {
                return PathBuf::from(python);
            }
            let output = Command::new("bash")
                .arg(repo_root().join("scripts/python-env.sh"))
                .output()
                .expect("run scripts/python-env.sh");
            assert!(
                output.status.success(),
                "could not make the Python reference environment:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
        })
        .clone()
}
