"""Who is protected, how, when and where copies live: policies, rules, assignments, runs and alerts."""
