//! The test harness: starts real components (etcd, kube-apiserver, ...) for end-to-end tests.
