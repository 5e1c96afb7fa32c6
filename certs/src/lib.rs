//! cairn-certs: serving certificates for the webhook (to be built in its own issue).
