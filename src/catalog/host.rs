//! Host metrics (`rose_host_*`, check `host_resources`), read with sysinfo.

metrics! {
    list HOST;

    HOST_CPU_USAGE = "rose_host_cpu_usage_ratio", Gauge, "1", [],
        "Share of all CPUs busy since the previous run (0 to 1; 0 on the first run).";
    HOST_CPUS = "rose_host_cpus", Gauge, "1", [],
        "Logical CPUs of the host.";
    HOST_LOAD = "rose_host_load_average", Gauge, "1", ["window"],
        "Load average over 1m, 5m and 15m.";
    HOST_MEMORY_TOTAL = "rose_host_memory_total_bytes", Gauge, "bytes", [],
        "Total memory of the host.";
    HOST_MEMORY_AVAILABLE = "rose_host_memory_available_bytes", Gauge, "bytes", [],
        "Memory available for new work without swapping (MemAvailable).";
    HOST_SWAP_TOTAL = "rose_host_swap_total_bytes", Gauge, "bytes", [],
        "Total swap space.";
    HOST_SWAP_USED = "rose_host_swap_used_bytes", Gauge, "bytes", [],
        "Swap space in use.";
    HOST_DISK_TOTAL = "rose_host_disk_total_bytes", Gauge, "bytes", ["mount"],
        "Size of the volume holding the SQLite file / data directory (by mount point).";
    HOST_DISK_AVAILABLE = "rose_host_disk_available_bytes", Gauge, "bytes", ["mount"],
        "Space available to unprivileged users on that volume.";
    HOST_DISK_USED_RATIO = "rose_host_disk_used_ratio", Gauge, "1", ["mount"],
        "Share of that volume in use (1 - available / total).";
}
