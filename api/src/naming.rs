//! Names of the objects cairn makes: sessions per slot, Jobs, interim PVCs.
