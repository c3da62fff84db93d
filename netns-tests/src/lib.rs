//! Integration tests that need root and network namespaces live in `tests/` of this crate.
//! They arrive with the datapath issue (#3); the offline policy tests are in the root package.
