"""UDP relay and receiver (to be written)."""


def add_relay_arguments(p):
    pass


def relay_main(args):
    raise NotImplementedError


def add_receive_arguments(p):
    pass


def receive_main(args):
    raise NotImplementedError


def add_demo_arguments(p):
    pass


def demo_main(args):
    raise NotImplementedError
