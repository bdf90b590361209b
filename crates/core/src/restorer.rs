pub fn todo(){}
