//! cairn-controller: scheduling and session runner (to be built in its own issue).

fn main() {
    println!("cairn-controller: not built yet");
}
