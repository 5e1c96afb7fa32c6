// Scratch module of the node's pause program (the Pod sandbox's process), built statically by
// `cargo xtask testbed` into the cache: nothing can be pulled on the testbed.
module cairn.invalid/testbed/pause

go 1.25
