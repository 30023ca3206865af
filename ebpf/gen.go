package ebpf

// The generated tabby_bpfel.go and tabby_bpfel.o are committed so that building
// needs no clang; `make generate-bpf` (clang, libbpf-dev, linux-libc-dev) rebuilds them.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type policy_key -type policy_value -type endpoint -type ipcache_key -type ct_key -type ct_value -type counter -type ep_counter_key -type ep_counter tabby bpf/tabby.c -- -I/usr/include/x86_64-linux-gnu
