//! Injected request failures: the next matching requests answer with an error status and change
//! nothing.

use crate::api::Target;
use crate::error::ApiError;

/// One armed fault.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    /// HTTP method (upper case) or `*`.
    pub method: String,
    /// Resource plural or `*`.
    pub plural: String,
    /// Subresource (`status`, `scale`), `None` for the resource itself.
    pub sub: Option<String>,
    /// Requests still to fail.
    pub left: usize,
    /// HTTP status to answer with.
    pub code: u16,
}

impl Fault {
    fn matches(&self, method: &str, target: &Target) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && (self.plural == "*" || self.plural == target.def.plural)
            && self.sub.as_deref() == target.sub.as_deref()
    }
}

/// The faults armed, in the order they were armed.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<Fault>,
}

impl Faults {
    /// Arms a fault.
    pub fn add(&mut self, fault: Fault) {
        if fault.left > 0 {
            self.armed.push(fault);
        }
    }

    /// The error for this request, if an armed fault matches it (which then counts it).
    pub fn take(&mut self, method: &str, target: &Target) -> Option<ApiError> {
        let index = self.armed.iter().position(|f| f.matches(method, target))?;
        let fault = &mut self.armed[index];
        fault.left -= 1;
        let code = fault.code;
        if fault.left == 0 {
            self.armed.remove(index);
        }
        let request = match &target.sub {
            Some(sub) => format!("{method} {}/{sub}", target.def.plural),
            None => format!("{method} {}", target.def.plural),
        };
        Some(ApiError::injected(
            code,
            target.def,
            target.name.as_deref(),
            &request,
        ))
    }

    /// Requests the armed faults will still fail.
    pub fn pending(&self) -> usize {
        self.armed.iter().map(|f| f.left).sum()
    }
}
