package mapped

func (h *heap) checkDirectory() error { return nil }
