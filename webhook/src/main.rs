//! cairn-webhook: the admission server (to be built in its own issue).

fn main() {
    println!("cairn-webhook: not built yet");
}
