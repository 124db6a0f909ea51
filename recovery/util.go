package recovery

import "errors"

func isVersion(err error) bool { return errors.Is(err, ErrVersion) }
