//! Run-time choice of the widest vector unit for the CPU's elementwise kernels.
//!
//! The release build targets baseline x86-64 (SSE2), so a plain loop runs four floats at a
//! time. [`dispatch`] compiles a kernel body three times (AVX-512, AVX2 + FMA, baseline) and
//! calls the widest the CPU has. The three agree bit for bit on every kernel here: Rust never
//! contracts a product and a sum into a fused multiply-add by itself, and the IEEE operations
//! (add, multiply, divide, square root) are correctly rounded at every width.

/// Calls `body(args…)` compiled for the widest vector unit the CPU has. `body` is a function
/// in scope at the call site, marked `#[inline(always)]` so that each copy is compiled with
/// its caller's target features.
macro_rules! dispatch {
    ($body:ident($($arg:ident: $ty:ty),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { avx512($($arg),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { avx2($($arg),*) };
            }
        }
        $body($($arg),*)
    }};
}
pub(crate) use dispatch;
