"""cupy.cuda of the stand-in: one device, synchronize() is a no-op (the stand-in computes on the host)."""


class CUDARuntimeError(RuntimeError):
    pass


class runtime:  # noqa: N801  (a module in CuPy)
    CUDARuntimeError = CUDARuntimeError

    @staticmethod
    def getDeviceCount():  # noqa: N802
        return 1

    @staticmethod
    def getDeviceProperties(device):  # noqa: N802
        return {"name": b"CuPy stand-in (NumPy on the host)", "totalGlobalMem": 0}


class Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        pass


def is_available():
    return True
