//! Linker settings for a Node addon (napi-build).

fn main() {
    napi_build::setup();
}
