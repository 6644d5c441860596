//! An example sink plugin for `disco serve --sink-plugin PATH`, speaking disco's sink C ABI,
//! version 1 (see `doc/serve.md`):
//!
//! ```c
//! uint32_t disco_sink_abi_version(void);
//! int32_t  disco_sink_on_fix_result(const char *json, size_t len);   /* 0: ok */
//! int32_t  disco_sink_on_dance_report(const char *json, size_t len); /* 0: ok */
//! ```
//!
//! It appends each JSON document, one a line, to the file named by `DISCO_SINK_EXAMPLE_OUT`.
//! For disco's tests, `DISCO_SINK_EXAMPLE_ABI=N` makes it claim ABI version N, and
//! `DISCO_SINK_EXAMPLE_FAIL=1` makes every call return an error.

use std::ffi::c_char;
use std::io::Write;

/// The ABI version this plugin speaks.
const ABI_VERSION: u32 = 1;

/// disco calls this first, and loads the plugin only when it returns the version it speaks.
#[no_mangle]
pub extern "C" fn disco_sink_abi_version() -> u32 {
    std::env::var("DISCO_SINK_EXAMPLE_ABI")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ABI_VERSION)
}

fn append(kind: &str, json: *const c_char, len: usize) -> i32 {
    if std::env::var_os("DISCO_SINK_EXAMPLE_FAIL").is_some() {
        return 1;
    }
    if json.is_null() {
        return 2;
    }
    // SAFETY: disco passes a pointer to `len` bytes that stay valid during the call.
    let bytes = unsafe { std::slice::from_raw_parts(json.cast::<u8>(), len) };
    let Some(path) = std::env::var_os("DISCO_SINK_EXAMPLE_OUT") else {
        return 0;
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| {
            let mut line = format!("{kind} ").into_bytes();
            line.extend_from_slice(bytes);
            line.push(b'\n');
            // One write a line, so lines never interleave.
            f.write_all(&line)
        });
    // A panic must never unwind into disco: nothing above panics, and errors become codes.
    match written {
        Ok(()) => 0,
        Err(_) => 3,
    }
}

/// Takes one fix result (JSON, `len` bytes, not NUL-terminated).
#[no_mangle]
pub extern "C" fn disco_sink_on_fix_result(json: *const c_char, len: usize) -> i32 {
    append("fix", json, len)
}

/// Takes one dance report (JSON, `len` bytes, not NUL-terminated).
#[no_mangle]
pub extern "C" fn disco_sink_on_dance_report(json: *const c_char, len: usize) -> i32 {
    append("dance", json, len)
}
