/** Defaults of the QEMU driver, in one place. */

/** QEMU binary looked up on PATH when the image's config names none. */
export const DEFAULT_QEMU_BINARY = 'qemu-system-x86_64'
/** Machine type of a VM. */
export const DEFAULT_MACHINE = 'pc'
/** vCPUs of a VM. */
export const DEFAULT_CPUS = 1
/** How long QEMU may take to open its QMP socket after it was started. */
export const QMP_CONNECT_TIMEOUT_MS = 15_000
/** How long one QMP command may take to answer. */
export const QMP_COMMAND_TIMEOUT_MS = 30_000
/** How long a freshly booted guest may take to print its first heartbeat (TCG boots are slow). */
export const DEFAULT_BOOT_TIMEOUT_MS = 120_000
/** How long a resumed guest may take to print a heartbeat on its console (the arrival check). */
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 5_000
/** How long saving or loading the device state may take. */
export const DEVICE_STATE_TIMEOUT_MS = 30_000
/** How long a VM asked to quit may take before it is killed. */
export const QUIT_TIMEOUT_MS = 5_000
/** Auto-converge: how long a throttled VM runs between two stops. */
export const THROTTLE_RUN_MS = 20
/** How long the KVM probe waits for a guest kernel's end of its boot. */
export const KVM_PROBE_TIMEOUT_MS = 10_000
/** Longest unix socket path (sun_path is 108 bytes with its NUL). */
export const MAX_SOCKET_PATH = 107
/** How often a log or a status is polled while waiting. */
export const POLL_MS = 5
/** What a VM adds to every pause, for the planner: device state out and in, cont, the heartbeat (measured 60–120 ms here). */
export const VM_FIXED_PAUSE_MS = 100
/**
 * Post-copy: how long a VM's requests to the node's NBD export wait for its client to reconnect
 * when the export goes away (the node restarting) before they fail; they are sent again once it
 * is back. A guest's virtio disk has no timeout of its own: a long wait is a stall, a failure is
 * an I/O error in the guest.
 */
export const POSTCOPY_NBD_RECONNECT_DELAY_S = 300
/** Post-copy: how long a VM retries its first connection to the node's NBD export. */
export const POSTCOPY_NBD_OPEN_TIMEOUT_S = 5
