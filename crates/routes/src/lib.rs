//! OpenShift Route timeouts for LiteMaaS (work in progress, issue 11).
