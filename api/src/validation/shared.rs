//! Checks shared by several kinds: targets, runtime settings, scratch and interim volumes, Task params, durations.
