//! README.md's generated tables match the code they come from. To refresh them after changing a
//! setting or an exit code: `UPDATE_README=1 cargo test --test readme`.

use std::path::Path;

fn section(readme: &str, name: &str) -> (usize, usize) {
    let start = format!("<!-- {name}:start -->\n");
    let end = format!("<!-- {name}:end -->");
    let s = readme
        .find(&start)
        .unwrap_or_else(|| panic!("README has no {start:?}"))
        + start.len();
    let e = readme[s..]
        .find(&end)
        .unwrap_or_else(|| panic!("README has no {end:?}"))
        + s;
    (s, e)
}

#[test]
fn readme_tables_match_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let mut readme = std::fs::read_to_string(&path).unwrap();
    let tables = [
        ("settings", sysrunner::config::defs::markdown_table()),
        ("exit-codes", sysrunner::exit::Exit::markdown_table()),
    ];
    let update = std::env::var_os("UPDATE_README").is_some();
    for (name, want) in tables {
        let (s, e) = section(&readme, name);
        if readme[s..e] != want {
            if update {
                readme.replace_range(s..e, &want);
            } else {
                panic!(
                    "README's {name} table is stale; run UPDATE_README=1 cargo test --test readme\nwant:\n{want}"
                );
            }
        }
    }
    if update {
        std::fs::write(&path, readme).unwrap();
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let (s, e) = section(&readme, "test-command");
    let block = readme[s..e].trim();
    assert!(
        block.starts_with("```sh\n") && block.ends_with("```"),
        "{block}"
    );
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.contains("test-command:start"),
        ".ci/run must take its test command from README"
    );
}
