package commands

// What the published contract of the commands topic (the AsyncAPI
// document) is generated from: each command's payload type and its
// personal fields, as the bus itself uses them.

// NewPayload returns a new zero payload of the command (a *P).
func (d Definition) NewPayload() any { return d.payload() }

// PersonalFields returns the fields of payload p (a *P, as NewPayload
// returns) that the bus seals before the command is logged.
func (d Definition) PersonalFields(p any) []*string {
	if d.personal == nil {
		return nil
	}
	return d.personal(p)
}

// Internal reports whether only orderflow's own processes send the command.
func (d Definition) Internal() bool { return d.internal }

// RouteOnly reports whether clients send the command only through its own
// route, never by type through POST /commands.
func (d Definition) RouteOnly() bool { return d.routeOnly }
