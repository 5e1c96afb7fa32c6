//! cairn-agent: the program inside backup and restore Jobs (to be built in its own issue).

fn main() {
    println!("cairn-agent: not built yet");
}
