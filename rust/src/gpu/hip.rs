//! The HIP runtime, loaded with `dlopen` at run time (never needed to build or import rxquant):
//! its version, `hipGetDeviceCount`, and device names. Without an AMD GPU the runtime answers
//! error 100 (`hipErrorNoDevice`), which is reported as "no device".

use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, CStr};

/// Library names tried in order (`RXQUANT_HIP_LIBRARY` first when set).
pub const LIBRARIES: [&str; 2] = ["libamdhip64.so.5", "libamdhip64.so"];
/// `hipErrorNoDevice`.
pub const HIP_ERROR_NO_DEVICE: c_int = 100;

/// A device the HIP runtime lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HipDevice {
    pub index: u32,
    pub name: String,
}

/// What the HIP runtime says, or why it could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HipStatus {
    /// The library that was loaded.
    pub library: Option<String>,
    /// `hipRuntimeGetVersion`, e.g. 50221153 for 5.2.21153.
    pub runtime_version: Option<i32>,
    pub devices: Vec<HipDevice>,
    /// Why there is no device (library missing, error code, ...), if there is none.
    pub reason: Option<String>,
}

type GetInt = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;

/// Loads the runtime and queries it. Never fails: problems are in `reason`.
pub fn status() -> HipStatus {
    // A library the user names is the only one tried: falling back to the system's would report
    // another runtime than the one asked for.
    let named = std::env::var("RXQUANT_HIP_LIBRARY").ok().filter(|v| !v.is_empty());
    let names: Vec<String> = match &named {
        Some(v) => vec![v.clone()],
        None => LIBRARIES.iter().map(|s| s.to_string()).collect(),
    };
    let mut last = String::new();
    for name in &names {
        // SAFETY: loading the HIP runtime runs its initializers; it is a system library meant
        // to be loaded this way.
        match unsafe { Library::new(name) } {
            Ok(lib) => return query(&lib, name),
            Err(e) => last = e.to_string(),
        }
    }
    HipStatus {
        library: None,
        runtime_version: None,
        devices: Vec::new(),
        reason: Some(match named {
            Some(v) => format!("RXQUANT_HIP_LIBRARY={v} cannot be loaded: {last}"),
            None => format!("the HIP runtime (libamdhip64) is not installed or cannot be loaded: {last}"),
        }),
    }
}

fn query(lib: &Library, name: &str) -> HipStatus {
    let mut st =
        HipStatus { library: Some(name.to_string()), runtime_version: None, devices: vec![], reason: None };
    // SAFETY: the symbols have these C signatures in every HIP release (hip_runtime_api.h).
    unsafe {
        let count: Symbol<GetInt> = match lib.get(b"hipGetDeviceCount\0") {
            Ok(f) => f,
            Err(e) => {
                st.reason = Some(format!("{name} has no hipGetDeviceCount: {e}"));
                return st;
            }
        };
        if let Ok(version) = lib.get::<GetInt>(b"hipRuntimeGetVersion\0") {
            let mut v = 0;
            if version(&mut v) == 0 {
                st.runtime_version = Some(v);
            }
        }
        let mut n: c_int = 0;
        let rc = count(&mut n);
        if rc != 0 {
            let text = lib
                .get::<ErrorString>(b"hipGetErrorString\0")
                .ok()
                .map(|f| f(rc))
                .filter(|p| !p.is_null())
                .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned())
                .unwrap_or_default();
            st.reason = Some(describe_error("hipGetDeviceCount", rc, &text));
            return st;
        }
        let get_name = lib.get::<GetName>(b"hipDeviceGetName\0").ok();
        for i in 0..n.max(0) {
            let mut buf = [0 as c_char; 256];
            let name = match &get_name {
                Some(f) if f(buf.as_mut_ptr(), buf.len() as c_int, i) == 0 => {
                    CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
                }
                _ => String::from("unknown"),
            };
            st.devices.push(HipDevice { index: i as u32, name });
        }
        if st.devices.is_empty() {
            st.reason = Some("hipGetDeviceCount found 0 devices".into());
        }
    }
    st
}

/// How a failed HIP call is reported, with error 100 spelled out as "no device".
pub fn describe_error(call: &str, code: c_int, text: &str) -> String {
    let what = if code == HIP_ERROR_NO_DEVICE { "no device" } else { "error" };
    format!("{call} returned {code} ({what}: {text})")
}

/// `hipRuntimeGetVersion`'s number as `major.minor.patch`.
pub fn version_string(v: i32) -> String {
    format!("{}.{}.{}", v / 10_000_000, (v / 100_000) % 100, v % 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_reason_when_there_is_no_device() {
        let st = status();
        // Here there is no AMD GPU: either no runtime, or the runtime says no device (error 100).
        if st.devices.is_empty() {
            let r = st.reason.unwrap();
            assert!(
                r.contains("not installed") || r.contains("returned 100") || r.contains("0 devices"),
                "{r}"
            );
        }
        assert_eq!(version_string(50221153), "5.2.21153");
    }
}
