package envelope

import (
	"errors"

	"github.com/mapstore/mapstore/recovery"
)

func isVersion(err error) bool { return errors.Is(err, recovery.ErrVersion) }
