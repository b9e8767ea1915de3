package keys

// MaintenanceReport counts what the key steps of one maintenance run did
// (the subscriptions' maintenance runs them with its own, and reports the
// two together).
type MaintenanceReport struct {
	GraceEnded int `json:"grace_ended"`
	Expired    int `json:"expired"`
	Renewed    int `json:"renewed"`
	Rotated    int `json:"rotated"`
	Notices    int `json:"notices"`
}
