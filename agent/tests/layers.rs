//! The agent's modules form layers: no module reaches, directly or through others, back to
//! itself. Edges are read from the source text (`use crate::x` and `crate::x::` paths in code;
//! comment lines, doc links included, are skipped; `#[cfg(test)]` code counts like any other).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module under `agent/src` and the modules it names through `crate::`.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("agent/src") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("read module");
        graph.insert(module, targets(&text));
    }
    // main.rs is the binary: it reaches the library as `cairn_agent::`, not `crate::`.
    graph.remove("main");
    graph.remove("lib");
    graph
}

/// The modules a file's code names as `crate::<module>` (`use crate::{a, b}` too).
fn targets(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.insert(ident(item.trim()));
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle, as the modules along it (first repeated at the end), if the graph has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|m| m == node).unwrap();
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if next != node
                && let Some(c) = visit(next, graph, marks, path)
            {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_form_layers() {
    let graph = edges();
    assert!(graph.contains_key("repo") && graph.contains_key("lock"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the agent's modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn a_back_edge_is_found() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), targets("use crate::{b, error};"));
    graph.insert("b".to_string(), targets("fn f() { crate::c::g() }"));
    graph.insert(
        "c".to_string(),
        targets("// crate::a in a comment\nuse crate::a::X;"),
    );
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a");
    assert_eq!(cycle.join(" -> "), "a -> b -> c -> a");
}
