//! GpuCpuSyncBridge placeholder (filled in below).
