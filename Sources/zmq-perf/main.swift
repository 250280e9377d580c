print("zmq-perf")
