//! The library's layers run one way: a module may import from the layers before it and never
//! from one after it. This test reads every `crate::…` path in `src/` (in `use` declarations,
//! brace groups included, and inline paths) and fails naming the file, the line and the
//! import that reaches upward.
use std::path::{Path, PathBuf};

/// The layers, lowest first. Modules within the foundations are ordered too, so that no two
/// of them import each other.
const LAYERS: &[&str] = &[
    // foundations
    "config", "stats", "store", "env", "nn", "ckpt", //
    "replay", "model", "planning", "agent", "runner", "spec", "sched", "report", "bench",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

/// The top-level module a file of `src/` belongs to; None for the crate root and the binary
/// (`lib.rs`, `main.rs` and its modules), which sit above every layer.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    rank(&name).map(|_| name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` with comments and string literals blanked (line structure kept).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if b[i] == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                if b[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == '\'' && b.get(i + 2) == Some(&'\'') {
            // A char literal such as '"' or '{'.
            out.push_str("' '");
            i += 3;
        } else if b[i] == '\'' && b.get(i + 1) == Some(&'\\') {
            // An escaped char literal such as '\"' or '\u{7f}'.
            i += 2;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Every top-level module a `crate::` path in `code` names, with its line (1-based):
/// `crate::a::b`, and each first segment of `crate::{a::b, c}`.
fn crate_imports(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        // `crate::` itself, not the tail of another path (`mycrate::`).
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // First segments of the group's top-level items.
            let mut depth = 0;
            let mut item_start = true;
            let mut pos = from + 1;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && is_ident(c) => {
                        let name: String =
                            code[pos..].chars().take_while(|&c| is_ident(c)).collect();
                        found.push((line_of(pos), name));
                        item_start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => item_start = false,
                }
                pos += c.len_utf8();
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.push((line_of(from), name));
            }
        }
    }
    found
}

/// The upward imports in `src`: (file, line, importing module, imported module).
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let own = rank(&module).unwrap();
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for (line, target) in crate_imports(&code) {
            let Some(theirs) = rank(&target) else {
                continue;
            };
            if theirs > own {
                bad.push(format!(
                    "{}:{line}: `{module}` imports `crate::{target}`, a higher layer \
                     (order: {})",
                    file.display(),
                    LAYERS.join(" → ")
                ));
            }
        }
    }
    bad
}

#[test]
fn layers_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

/// Every top-level module of the library has a place in the order.
#[test]
fn every_module_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(
                rank(name).is_some(),
                "src/lib.rs: module `{name}` has no layer"
            );
        }
    }
}

/// The checker itself: a planted upward import, in each form, is found with its line.
#[test]
fn a_planted_upward_import_is_caught() {
    let dir = std::env::temp_dir().join(format!("mpdp-architecture-{}", std::process::id()));
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("planted.rs"),
        "// crate::report in a comment is not an import\n\
         use crate::env::Task;\n\
         use crate::{nn::Mlp, agent::{Agent, AgentError}};\n\
         fn f() { let s = \"crate::sched\"; crate::runner::run(); }\n",
    )
    .unwrap();
    let bad = violations(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].contains("planted.rs:3: `model` imports `crate::agent`"),
        "{}",
        bad[0]
    );
    assert!(
        bad[1].contains("planted.rs:4: `model` imports `crate::runner`"),
        "{}",
        bad[1]
    );
}
