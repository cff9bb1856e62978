"""shared_tensor, as shipped by tcast: the API of the `shared_tensor` 0.2.2
package (world-sim-dev/shared-tensor) implemented by tcast.shared.

Name clash: this package has the same import name as the original.  With
both installed, whichever comes first on sys.path wins; uninstall the
original (`pip uninstall shared-tensor`) to run its programs on tcast, or
import tcast.shared directly.  See docs/shared.md."""
from tcast.shared import *  # noqa: F401,F403
from tcast.shared import __all__  # noqa: F401
from tcast.shared import SharedObjectHandle, SharedTensorClient, SharedTensorProvider, SharedTensorServer  # noqa: F401

__version__ = "0.2.2+tcast"
IMPLEMENTATION = "tcast"
