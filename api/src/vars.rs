//! `${VAR}` / `${VAR:=default}` substitution in Task and Function strings.
