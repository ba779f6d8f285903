//! Placeholder until the forwarding-headers module lands.
