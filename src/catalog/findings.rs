//! Finding metrics (`rose_finding_*`).

metrics! {
    list FINDINGS;

    FINDING_ACTIVE = "rose_finding_active", Gauge, "1", ["code", "severity"],
        "1 while a finding of this code is active (held for the pending cycles, not yet resolved); see docs/runbooks/<code>.md.";
    FINDING_PENDING = "rose_finding_pending", Gauge, "1", ["code", "severity"],
        "1 while a finding of this code has been seen but not for enough cycles to be active.";
    FINDING_SILENCED = "rose_finding_silenced", Gauge, "1", ["code"],
        "Findings of this code present but silenced on purpose ([findings] disabled_codes or silence); they count toward no status, rose_finding_active or alert.";
    FINDING_TRANSITIONS = "rose_finding_transitions_total", Counter, "1", ["to"],
        "Findings that became active (to=active) or resolved (to=resolved).";
}
