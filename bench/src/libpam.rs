//! The benchmark's edge to the real libpam: `pam_start_confdir`,
//! `pam_authenticate` and `pam_end`, with a conversation that answers every
//! prompt with one code.
//!
//! Written by hand: the Rust PAM client crates (pam-client, pam) cannot
//! point libpam at a private configuration directory (`pam_start_confdir`,
//! libpam ≥ 1.5), and the benchmark must never touch /etc/pam.d. This file
//! is the only `unsafe` of the benchmark.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

/// `PAM_SUCCESS`.
pub const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_start_confdir(
        service_name: *const c_char,
        user: *const c_char,
        pam_conversation: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut c_void, pam_status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut c_void, errnum: c_int) -> *const c_char;
}

/// What the conversation answers, and how often it was asked.
struct Answer {
    code: CString,
    prompts: AtomicU32,
}

/// The conversation: every prompt gets the code, every message is read and
/// dropped. It never panics (a panic cannot unwind into libpam).
extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    let Ok(n) = usize::try_from(num_msg) else {
        return PAM_CONV_ERR;
    };
    if n == 0 || n > 32 || msg.is_null() || resp.is_null() || appdata_ptr.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: appdata_ptr is the `Answer` of `PamHandle`, freed only after
    // pam_end.
    let answer = unsafe { &*(appdata_ptr as *const Answer) };
    // SAFETY: calloc of n zeroed responses; libpam takes ownership and
    // frees the array and each `resp` string with free().
    let replies =
        unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes `msg` as an array of `num_msg` valid
        // pointers to messages.
        let style = unsafe { (**msg.add(i)).msg_style };
        if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
            answer.prompts.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `code` is a valid NUL-terminated string; strdup's copy
            // is freed by libpam.
            let copy = unsafe { libc::strdup(answer.code.as_ptr()) };
            // SAFETY: i < n, inside the calloc'd array.
            unsafe { (*replies.add(i)).resp = copy };
        }
    }
    // SAFETY: `resp` is non-null, a slot libpam gave us for the array.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// One PAM transaction (`pam_start_confdir` … `pam_end`).
pub struct PamHandle {
    pamh: *mut c_void,
    /// From `Box::into_raw`, freed in `drop` after `pam_end`: libpam holds
    /// this pointer as `appdata_ptr` until then.
    answer: *mut Answer,
    last: c_int,
}

impl PamHandle {
    /// Starts a transaction of `service` (a file in `confdir`) for `user`,
    /// whose prompts will be answered with `code`.
    pub fn start(confdir: &CStr, service: &CStr, user: &CStr, code: &str) -> Result<Self, c_int> {
        let code = CString::new(code).map_err(|_| PAM_CONV_ERR)?;
        let answer = Box::into_raw(Box::new(Answer {
            code,
            prompts: AtomicU32::new(0),
        }));
        let conv = PamConv {
            conv: Some(converse),
            appdata_ptr: answer as *mut c_void,
        };
        let mut pamh: *mut c_void = ptr::null_mut();
        // SAFETY: every pointer is valid for the call; libpam copies `conv`
        // (the struct) and keeps `appdata_ptr`, which `answer` keeps alive.
        let rc = unsafe {
            pam_start_confdir(
                service.as_ptr(),
                user.as_ptr(),
                &conv,
                confdir.as_ptr(),
                &mut pamh,
            )
        };
        if rc != PAM_SUCCESS || pamh.is_null() {
            // SAFETY: no handle holds the pointer; it came from into_raw.
            drop(unsafe { Box::from_raw(answer) });
            return Err(rc);
        }
        Ok(PamHandle {
            pamh,
            answer,
            last: rc,
        })
    }

    /// `pam_authenticate(pamh, 0)`.
    pub fn authenticate(&mut self) -> c_int {
        // SAFETY: `pamh` came from a successful pam_start_confdir and is
        // not ended yet.
        self.last = unsafe { pam_authenticate(self.pamh, 0) };
        self.last
    }

    /// How many prompts the conversation answered.
    pub fn prompts(&self) -> u32 {
        // SAFETY: `answer` stays valid until `drop` frees it.
        unsafe { &*self.answer }.prompts.load(Ordering::Relaxed)
    }
}

impl Drop for PamHandle {
    fn drop(&mut self) {
        // SAFETY: ends the transaction started in `start`, once.
        unsafe { pam_end(self.pamh, self.last) };
        // SAFETY: libpam no longer holds the pointer after pam_end; it came
        // from Box::into_raw and is freed only here.
        drop(unsafe { Box::from_raw(self.answer) });
    }
}

/// libpam's name for a return code.
pub fn strerror(rc: c_int) -> String {
    // SAFETY: pam_strerror accepts a null handle in Linux-PAM and returns a
    // static string.
    let text = unsafe { pam_strerror(ptr::null_mut(), rc) };
    if text.is_null() {
        return format!("PAM error {rc}");
    }
    // SAFETY: non-null, NUL-terminated static string.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}
