//! The libpam side of the login flow: items, syslog and our own call of the
//! application's conversation function.
//!
//! pamsm's `conv` hands back the answer as a `&CStr` into a buffer it never
//! wipes or frees, and `get_authtok` returns the cached *password*; so the
//! conversation is driven here: one message, the answer copied into a
//! buffer that is zeroised on drop, the C buffer wiped and both the string
//! and the response array `free`d, as libpam's own `pam_prompt` does.

use crate::flow::{LogLevel, LoginHandler};
use pamsm::{LogLvl, Pam, PamError, PamLibExt};
use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;
use zeroize::{Zeroize, Zeroizing};

/// `PAM_SUCCESS` from `<security/_pam_types.h>`.
const PAM_SUCCESS: c_int = 0;
/// `PAM_CONV`: the item holding the application's `struct pam_conv`.
const PAM_CONV: c_int = 5;
/// `PAM_TTY` from `<security/_pam_types.h>`.
const PAM_TTY: c_int = 3;
/// `PAM_PROMPT_ECHO_OFF`: ask without echoing the answer.
const PAM_PROMPT_ECHO_OFF: c_int = 1;
/// `PAM_ERROR_MSG`: show an error, no answer expected.
const PAM_ERROR_MSG: c_int = 3;
/// `PAM_TEXT_INFO`: show information, no answer expected.
const PAM_TEXT_INFO: c_int = 4;

/// `struct pam_message`.
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

/// `struct pam_response`: `resp` is `malloc`ed by the application and
/// `free`d by the module.
#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    // Part of the C layout; unused by Linux-PAM and by this module.
    #[allow(dead_code)]
    resp_retcode: c_int,
}

/// The application's conversation function (`struct pam_conv.conv`).
type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_get_item(pamh: *const c_void, item_type: c_int, item: *mut *const c_void) -> c_int;
}

// `transmute_copy` below relies on `Pam` being exactly one pointer.
const _: () = assert!(std::mem::size_of::<Pam>() == std::mem::size_of::<*const c_void>());

/// [`LoginHandler`] over the handle libpam passed to an entry point.
pub struct LibPam<'a> {
    pam: &'a Pam,
    raw: *const c_void,
}

impl<'a> LibPam<'a> {
    /// Wraps the handle of the current call.
    pub fn new(pam: &'a Pam) -> Self {
        // SAFETY: pamsm 0.5 declares `#[repr(transparent)] pub struct
        // Pam(pub(crate) *const c_void)` (src/pam.rs), so its bytes are the
        // `pam_handle_t *` libpam passed in; the size is asserted above and
        // the copy is only used while `pam` is borrowed.
        let raw = unsafe { std::mem::transmute_copy::<Pam, *const c_void>(pam) };
        LibPam { pam, raw }
    }

    /// Sends one message of `style` through the application's conversation
    /// function; returns its answer, if any, in a buffer wiped on drop.
    fn converse(&self, style: c_int, text: &str) -> Result<Option<Zeroizing<Vec<u8>>>, PamError> {
        let text = CString::new(text).map_err(|_| PamError::CONV_ERR)?;
        let mut item: *const c_void = ptr::null();
        // SAFETY: `raw` is the live handle of the current entry point and
        // `item` is a valid place for libpam to store the item's address.
        let status = unsafe { pam_get_item(self.raw, PAM_CONV, &mut item) };
        if status != PAM_SUCCESS || item.is_null() {
            return Err(PamError::CONV_ERR);
        }
        // SAFETY: for PAM_CONV libpam returns its copy of the application's
        // `struct pam_conv`, which lives as long as the PAM handle.
        let conv = unsafe { &*item.cast::<PamConv>() };
        let conv_fn = conv.conv.ok_or(PamError::CONV_ERR)?;
        let message = PamMessage {
            msg_style: style,
            msg: text.as_ptr(),
        };
        // Linux-PAM reads `msg` as an array of pointers, Solaris as a pointer
        // to an array; with one message both read the same thing.
        let mut messages: [*const PamMessage; 1] = [&message];
        let mut responses: *mut PamResponse = ptr::null_mut();
        // SAFETY: one message, valid (with the text it points to) for the
        // whole call; `responses` is a valid out-pointer; `appdata_ptr` is
        // the application's own, passed back unchanged.
        let status = unsafe { conv_fn(1, messages.as_mut_ptr(), &mut responses, conv.appdata_ptr) };
        // Whatever the status, an array handed back is ours to wipe and free.
        // SAFETY: after the call `responses` is NULL or a `malloc`ed array
        // of one `pam_response` (num_msg = 1) that the module now owns.
        let answer = unsafe { take_response(responses) };
        if status != PAM_SUCCESS {
            return Err(PamError::CONV_ERR);
        }
        Ok(answer)
    }
}

/// Copies the answer out of a conversation's response array, wipes the C
/// string and frees both.
///
/// # Safety
/// `responses` is NULL, or points to a `malloc`ed array of at least one
/// `pam_response` whose `resp` is NULL or a `malloc`ed NUL-terminated string,
/// and nothing else uses or frees them afterwards.
unsafe fn take_response(responses: *mut PamResponse) -> Option<Zeroizing<Vec<u8>>> {
    if responses.is_null() {
        return None;
    }
    // SAFETY: non-NULL and pointing to one `pam_response` (caller's contract).
    let resp = unsafe { (*responses).resp };
    let answer = if resp.is_null() {
        None
    } else {
        // SAFETY: `resp` is a NUL-terminated string (caller's contract).
        let len = unsafe { libc::strlen(resp) };
        // SAFETY: the `len` bytes before the NUL are initialised, and the
        // buffer is ours alone until it is freed below.
        let bytes = unsafe { std::slice::from_raw_parts_mut(resp.cast::<u8>(), len) };
        let copy = Zeroizing::new(bytes.to_vec());
        bytes.zeroize();
        // SAFETY: `malloc`ed by the application, ours to free, not used again.
        unsafe { libc::free(resp.cast()) };
        Some(copy)
    };
    // SAFETY: `malloc`ed by the application, ours to free, not used again.
    unsafe { libc::free(responses.cast()) };
    answer
}

impl LoginHandler for LibPam<'_> {
    fn user(&self) -> Result<Option<Vec<u8>>, PamError> {
        self.pam
            .get_user(None)
            .map(|user| user.map(|name| name.to_bytes().to_vec()))
    }

    fn account(&self, name: &str) -> Result<Option<String>, String> {
        use nix::errno::Errno;
        // nix wraps getpwnam_r (thread-safe, its buffer grown on ERANGE).
        match nix::unistd::User::from_name(name) {
            Ok(user) => Ok(user.map(|user| user.name)),
            // getpwnam_r(3): "0 or ENOENT or ESRCH or EBADF or EPERM or …
            // The given name or uid was not found" (nss_wrapper says ENOENT).
            Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => Ok(None),
            Err(errno) => Err(errno.desc().to_owned()),
        }
    }

    fn service(&self) -> String {
        match self.pam.get_service() {
            Ok(Some(service)) => service.to_string_lossy().into_owned(),
            _ => String::new(),
        }
    }

    fn rhost(&self) -> String {
        match self.pam.get_rhost() {
            Ok(Some(rhost)) => rhost.to_string_lossy().into_owned(),
            _ => String::new(),
        }
    }

    fn tty(&self) -> String {
        let mut item: *const c_void = ptr::null();
        // SAFETY: `raw` is the live handle of the current entry point and
        // `item` is a valid place for libpam to store the item's address.
        let status = unsafe { pam_get_item(self.raw, PAM_TTY, &mut item) };
        if status != PAM_SUCCESS || item.is_null() {
            return String::new();
        }
        // SAFETY: PAM_TTY is a NUL-terminated string owned by libpam that
        // lives as long as the handle; it is copied at once.
        let tty = unsafe { std::ffi::CStr::from_ptr(item.cast()) };
        tty.to_string_lossy().into_owned()
    }

    fn real_uid(&self) -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn auth_info(&self) -> Option<String> {
        match self.pam.getenv("SSH_AUTH_INFO_0") {
            Ok(Some(value)) => Some(value.to_string_lossy().into_owned()),
            _ => None,
        }
    }

    fn locale_var(&self, name: &str) -> Option<String> {
        // pam_env may have set the locale for this login; else the host's.
        if let Ok(Some(value)) = self.pam.getenv(name) {
            return Some(value.to_string_lossy().into_owned());
        }
        std::env::var(name).ok()
    }

    fn authtok(&self) -> Result<Option<Zeroizing<Vec<u8>>>, PamError> {
        // libpam keeps (and later wipes) its own copy; this one is ours.
        self.pam
            .get_cached_authtok()
            .map(|authtok| authtok.map(|text| Zeroizing::new(text.to_bytes().to_vec())))
    }

    fn set_authtok(&self, password: &[u8]) -> Result<(), PamError> {
        let password = CString::new(password).map_err(|error| {
            // A NUL inside: cannot be a C string. The error owns a copy.
            error.into_vec().zeroize();
            PamError::SYSTEM_ERR
        })?;
        // libpam copies the item; the CString's buffer is wiped after.
        let result = self.pam.set_authtok(&password);
        let mut bytes = password.into_bytes_with_nul();
        bytes.zeroize();
        result
    }

    fn prompt_echo_off(&self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, PamError> {
        // No answer at all is a conversation failure, not an empty code.
        self.converse(PAM_PROMPT_ECHO_OFF, prompt)?
            .ok_or(PamError::CONV_ERR)
    }

    fn error_message(&self, text: &str) -> Result<(), PamError> {
        self.converse(PAM_ERROR_MSG, text).map(drop)
    }

    fn info_message(&self, text: &str) -> Result<(), PamError> {
        self.converse(PAM_TEXT_INFO, text).map(drop)
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Error => LogLvl::ERR,
            LogLevel::Warning => LogLvl::WARNING,
            LogLevel::Notice => LogLvl::NOTICE,
            LogLevel::Debug => LogLvl::DEBUG,
        };
        // pamsm formats with "%s"; a message with a NUL byte is dropped.
        let _ = self.pam.syslog(level, message);
    }
}
