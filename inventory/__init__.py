"""What exists: sources, machines, disks, and the machine groups that scope who sees what."""
