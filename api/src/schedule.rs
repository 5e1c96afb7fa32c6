//! Schedule arithmetic: cron expressions in a time zone, the next slot, missed slots.
