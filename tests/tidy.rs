//! ARCHITECTURE.md's invariants, checked on the source (in the style of rust-analyzer's tidy
//! tests): only `store` issues SQL, only `api` and `simulate` parse JSON, only `cli` prints,
//! reads the process environment or installs signal handlers. Each rule is a list of patterns,
//! the places where they belong, and an allow-list whose every entry says why it is not a
//! violation. Comments and unit-test modules (`tests.rs`, `#[cfg(test)] mod ... { }`) are not
//! scanned: the invariants are about the code that ships.

// A failed check panics with its list of findings: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// One invariant.
struct Rule {
    name: &'static str,
    /// Substrings that break it.
    patterns: &'static [&'static str],
    /// Path prefixes (under `src/`) where the patterns are the point.
    home: &'static [&'static str],
    /// `(path, pattern, why)`: one use outside `home` that is not a violation.
    allowed: &'static [(&'static str, &'static str, &'static str)],
}

const RULES: &[Rule] = &[
    Rule {
        name: "SQL outside src/store/",
        patterns: &[
            "SELECT ",
            "INSERT ",
            "UPDATE ",
            "DELETE FROM",
            "CREATE TABLE",
            "CREATE INDEX",
            "CREATE UNIQUE INDEX",
            "ALTER TABLE",
            "DROP TABLE",
            "PRAGMA ",
            "rusqlite",
        ],
        home: &["src/store/"],
        allowed: &[],
    },
    Rule {
        name: "SQLite outside its backend (src/store/sqlite/)",
        patterns: &["rusqlite"],
        home: &["src/store/sqlite/"],
        allowed: &[],
    },
    Rule {
        name: "JSON parsed outside src/api/ and src/simulate/",
        patterns: &[
            "serde_json::from_str",
            "serde_json::from_slice",
            "serde_json::from_reader",
            "serde_json::from_value",
            "Deserialize",
        ],
        home: &["src/api/", "src/simulate/"],
        allowed: &[
            (
                "src/report/verify.rs",
                "Deserialize",
                "a report manifest auditwarden wrote, read back by verify-report",
            ),
            (
                "src/report/verify.rs",
                "serde_json::from_slice",
                "a report manifest auditwarden wrote, read back by verify-report",
            ),
            (
                "src/report/run.rs",
                "Deserialize",
                "the manifest's chain heads, which verify-report reads back",
            ),
            (
                "src/alert/sinks.rs",
                "serde_json::from_str",
                "an alert payload auditwarden built and stored, for the Slack text",
            ),
            (
                "src/cli",
                "serde_json::from_str",
                "an alert payload auditwarden built and stored, shown by `alerts`",
            ),
            (
                "src/export.rs",
                "serde_json::from_str::<&RawValue>",
                "checks that a stored event's raw text is JSON, to embed it verbatim: no field is read",
            ),
            (
                "src/store/sqlite/domain_rules.rs",
                "serde_json::from_str(roles)",
                "a roles column the store itself wrote as a JSON array of strings",
            ),
            (
                "src/store/postgres/mod.rs",
                "serde_json::from_str(roles)",
                "a roles column the store itself wrote as a JSON array of strings",
            ),
            (
                "src/demo.rs",
                "serde_json::from_str",
                "the simulator's own /_sim control answers (truth, received alerts), not DigiCert's API",
            ),
        ],
    },
    Rule {
        name: "printing outside src/cli and src/main.rs",
        patterns: &[
            "println!",
            "print!",
            "dbg!",
            "io::stdout",
        ],
        home: &["src/cli.rs", "src/cli/", "src/main.rs"],
        allowed: &[],
    },
    Rule {
        name: "environment or signal handlers below src/cli",
        patterns: &[
            "env::var",
            "env::set_var",
            "env::remove_var",
            "env::args",
            "tokio::signal",
            "signal::unix",
            "signal::ctrl_c",
            "signal_hook",
            "libc::signal",
            "sigaction",
        ],
        home: &["src/cli.rs", "src/cli/", "src/main.rs"],
        allowed: &[],
    },    Rule {
        name: "DigiCert paths outside src/api/ and src/simulate/",
        patterns: &[
            "\"/user",
            "\"/audit-log",
            "\"/role",
            "\"/account\"",
            "\"/container",
            "/account/api/v1",
            "/services/v2",
        ],
        home: &["src/api/", "src/simulate/"],
        allowed: &[],
    },
];

/// The findings of `rule` in one file (`path` relative to the package, `/`-separated).
fn check(rule: &Rule, path: &str, text: &str) -> Vec<String> {
    if rule.home.iter().any(|h| path.starts_with(h)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (n, line) in shipped_lines(path, text) {
        let code = strip_comment(line);
        let allowed = rule
            .allowed
            .iter()
            .any(|(file, what, _)| path.starts_with(file) && code.contains(what));
        // One finding per line, naming the first pattern it holds.
        if let Some(p) = rule.patterns.iter().find(|p| code.contains(**p)) {
            if allowed {
                continue;
            }
            out.push(format!(
                "{path}:{n}: {}: `{p}` in `{}`",
                rule.name,
                code.trim()
            ));
        }
    }
    out
}

/// The lines that ship, numbered from 1: not a unit-test file, not a `#[cfg(test)]` module.
fn shipped_lines<'a>(path: &str, text: &'a str) -> Vec<(usize, &'a str)> {
    if path.ends_with("/tests.rs") {
        return Vec::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let next = lines.get(i + 1).map_or("", |l| l.trim_start());
        if lines[i].trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            // Skip to the module's closing brace at the indentation it opened at.
            let indent = lines[i + 1].len() - next.len();
            let close = format!("{}}}", " ".repeat(indent));
            i += 2;
            while i < lines.len() && lines[i] != close {
                i += 1;
            }
            i += 1;
            continue;
        }
        out.push((i + 1, lines[i]));
        i += 1;
    }
    out
}

/// The line without a `//` comment (one outside a string literal).
fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '/' if !in_str && prev == '/' => return &line[..i - 1],
            _ => {}
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    line
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every file under src/, as (`src/...` path, text).
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .expect("under the package")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("read source");
            (rel, text)
        })
        .collect()
}

/// The shipped code keeps ARCHITECTURE.md's invariants.
#[test]
fn architecture_invariants_hold() {
    let files = sources();
    assert!(
        files.iter().any(|(p, _)| p == "src/store/mod.rs"),
        "the scan found no sources"
    );
    let findings: Vec<String> = RULES
        .iter()
        .flat_map(|r| files.iter().flat_map(move |(p, t)| check(r, p, t)))
        .collect();
    assert!(
        findings.is_empty(),
        "ARCHITECTURE.md's invariants are broken ({} finding(s)):\n  {}",
        findings.len(),
        findings.join("\n  ")
    );
}

/// Every allow-list entry still matches code: an entry whose use is gone must be removed.
#[test]
fn allow_list_has_no_stale_entries() {
    let files = sources();
    let mut stale = Vec::new();
    for r in RULES {
        for (file, what, why) in r.allowed {
            let used = files.iter().any(|(p, t)| {
                p.starts_with(file)
                    && shipped_lines(p, t)
                        .iter()
                        .any(|(_, l)| strip_comment(l).contains(what))
            });
            if !used {
                stale.push(format!("{}: {file} `{what}` ({why})", r.name));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "allow-list entries that match nothing:\n  {}",
        stale.join("\n  ")
    );
}

/// Each rule flags a violation in a file it does not own, and not in its home, a comment or a
/// unit-test module.
#[test]
fn each_rule_flags_a_violation() {
    let samples = [
        ("SQL outside", "let q = \"SELECT id FROM users\";"),
        (
            "JSON parsed",
            "let v: Event = serde_json::from_str(&body)?;",
        ),
        ("printing", "    println!(\"{rows} rows\");"),
        ("environment", "let k = std::env::var(\"KEY\");"),
        ("environment", "tokio::signal::ctrl_c().await;"),
        (
            "SQLite outside its backend",
            "let c = rusqlite::Connection::open(p);",
        ),
        (
            "DigiCert paths",
            "let p = client.get(\"/user\", &q, parse).await?;",
        ),
    ];
    for (rule_name, line) in samples {
        let rule = RULES
            .iter()
            .find(|r| r.name.starts_with(rule_name))
            .expect("rule");
        let text = format!("fn f() {{\n{line}\n}}\n");
        let found = check(rule, "src/report/x.rs", &text);
        assert_eq!(found.len(), 1, "{rule_name}: {line}: {found:?}");
        assert!(found[0].starts_with("src/report/x.rs:2: "), "{found:?}");
        assert!(
            check(rule, rule.home[0], &text).is_empty(),
            "home of {rule_name}"
        );
        let commented = format!("fn f() {{\n// {line}\n}}\n");
        assert!(check(rule, "src/report/x.rs", &commented).is_empty());
        let in_tests = format!("fn f() {{}}\n\n#[cfg(test)]\nmod tests {{\n{line}\n}}\n");
        assert!(check(rule, "src/report/x.rs", &in_tests).is_empty());
        assert!(check(rule, "src/report/tests.rs", &text).is_empty());
    }
    // Code after a test module is scanned again.
    let after = "#[cfg(test)]\nmod tests {\n}\nfn g() { println!(\"x\"); }\n";
    let printing = RULES
        .iter()
        .find(|r| r.name.starts_with("printing"))
        .expect("rule");
    assert_eq!(check(printing, "src/report/x.rs", after).len(), 1);
    // A `//` inside a string literal is not a comment.
    assert_eq!(
        strip_comment("let u = \"http://x\"; println!(); // c"),
        "let u = \"http://x\"; println!(); "
    );
}
