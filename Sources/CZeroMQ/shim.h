#ifndef CE_CZEROMQ_SHIM_H
#define CE_CZEROMQ_SHIM_H

#include <zmq.h>
#include <sys/eventfd.h>
#include <errno.h>
#include <unistd.h>
#include <signal.h>
#include <sys/prctl.h>

// zmq_msg_t is an opaque 64-byte struct. It is never copied as a Swift value (a bit copy
// aliases reference-counted data): the wrapper keeps one per receive loop on the heap.
_Static_assert(sizeof(zmq_msg_t) == 64, "zmq_msg_t layout changed");

// Names the calling thread as the system shows it (top -H, perf, gdb); at most 15 bytes.
// prctl is variadic, which Swift cannot call.
static inline void ce_name_this_thread(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

#endif
