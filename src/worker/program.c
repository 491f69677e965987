/* modelshare-worker: the worker program with the built-in backends (dense, identity). */
#include "worker.h"

int main(int argc, char **argv)
{
    return ms__worker_main(argc, argv, ms__backend_open);
}
