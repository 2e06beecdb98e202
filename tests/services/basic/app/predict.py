"""predict() for the basic test service: behaviour chosen by the input."""
import time


def preprocess(*args):
    if args and args[0] == "pre":
        return ("preprocessed",) + args[1:]
    return args


def predict(*args):
    if args and args[0] == "boom":
        raise ValueError("boom requested")
    if args and args[0] == "sleep":
        time.sleep(float(args[1]))
        return "slept"
    if args and args[0] == "spin":  # busy for args[1] s without a sleep, once args[2] exists
        open(args[2], "w").close()
        end = time.perf_counter() + float(args[1])
        while time.perf_counter() < end:
            pass
        return "spun"
    if args and args[0] == "stream":
        return ({"chunk": i} for i in range(int(args[1])))
    return {"args": list(args)}
